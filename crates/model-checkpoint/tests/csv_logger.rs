//! `CsvLogger` writes what Keras's `CSVLogger` writes, and a resumed run continues the file
//! from the rows its checkpoint had logged.

mod thread_log;

use model_checkpoint::{
    Callback, Checkpointable, Context, CsvLogger, Error, Logs, NamedTensor, Value,
};

struct Toy;

impl Checkpointable for Toy {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![])
    }
}

fn epochs(logger: &mut CsvLogger, range: std::ops::Range<usize>) {
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    for e in range {
        let logs = Logs::from([("loss", 1.0 / (e as f64 + 1.0)), ("acc", 0.1 * e as f64)]);
        logger.on_epoch_end(e, &logs, &mut ctx).expect("row");
    }
}

/// A logger writing `path` in the background through a [`thread_log::ThreadLog`], begun.
fn begun_in_background(
    path: &std::path::Path,
    ctx: &mut Context<'_>,
) -> (CsvLogger, std::sync::Arc<thread_log::ThreadLog>) {
    let storage = std::sync::Arc::new(thread_log::ThreadLog::default());
    let mut logger = CsvLogger::new(path)
        .storage(storage.clone())
        .background(true);
    logger.on_train_begin(&Logs::new(), ctx).expect("begin");
    (logger, storage)
}

#[test]
fn rows_are_as_keras_writes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.csv");
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    let mut logger = CsvLogger::new(&path).separator(';');
    logger
        .on_train_begin(&Logs::new(), &mut ctx)
        .expect("begin");
    // Keys sorted; 0-based epochs; Python's str of each value; a missing key as NA; a
    // field with the separator quoted; rows end in \r\n.
    let first = Logs::from([
        ("val;loss", Value::Float(0.1)),
        ("b", Value::Int(3)),
        ("a", Value::None),
    ]);
    logger.on_epoch_end(0, &first, &mut ctx).expect("row");
    logger
        .on_epoch_end(1, &Logs::from([("b", Value::Float(1e-7))]), &mut ctx)
        .expect("row");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "epoch;a;b;\"val;loss\"\r\n0;;3;0.1\r\n1;NA;1e-07;NA\r\n"
    );
    // Without append, a new run replaces the file.
    let mut again = CsvLogger::new(&path);
    again.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
}

#[test]
fn a_resumed_run_continues_from_its_checkpoint_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.csv");
    let toy = Toy;
    let mut logger = CsvLogger::new(&path).append(true);
    logger
        .on_train_begin(&Logs::new(), &mut Context::new(&toy))
        .expect("begin");
    epochs(&mut logger, 0..2);
    // The state a checkpoint after epoch 2 holds; the run went on to epoch 4 and crashed.
    let state = logger.state().expect("state");
    epochs(&mut logger, 2..4);
    let straight = std::fs::read_to_string(&path).expect("read");

    // Resumed from the checkpoint of epoch 2: the rows of epochs 2 and 3 are logged again,
    // replacing the crashed attempt's.
    let mut resumed = CsvLogger::new(&path).append(true);
    resumed.restore_state(&state).expect("restore");
    resumed
        .on_train_begin(&Logs::new(), &mut Context::new(&toy))
        .expect("begin");
    epochs(&mut resumed, 2..3);
    let lines = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .count();
    assert_eq!(lines, 4, "the header, epochs 0 and 1, and epoch 2 once");
    epochs(&mut resumed, 3..4);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), straight);
    // Appending without a resume keeps every row.
    let mut more = CsvLogger::new(&path).append(true);
    more.on_train_begin(&Logs::new(), &mut Context::new(&toy))
        .expect("begin");
    epochs(&mut more, 4..5);
    assert_eq!(
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count(),
        6
    );
}

#[test]
fn in_the_background_the_file_is_the_same_and_a_failure_surfaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    let mut written = Vec::new();
    for background in [false, true] {
        let path = dir.path().join(format!("h-{background}.csv"));
        let mut logger = CsvLogger::new(&path).background(background);
        logger
            .on_train_begin(&Logs::new(), &mut ctx)
            .expect("begin");
        epochs(&mut logger, 0..20);
        logger
            .on_train_end(&Logs::new(), &mut ctx)
            .expect("end waits");
        written.push(std::fs::read_to_string(&path).expect("read"));
    }
    assert_eq!(written[0], written[1]);
    assert_eq!(written[1].lines().count(), 21);

    // A file that cannot be written: the failure comes back at a later hook or at the end,
    // never lost.
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).expect("mkdir");
    let mut logger = CsvLogger::new(gone.join("h.csv")).background(true);
    logger
        .on_train_begin(&Logs::new(), &mut ctx)
        .expect("begin");
    // The file the logger creates at the start is written in the background: it may land
    // while the folder is removed, which is then removed again.
    let removed = (0..100).any(|_| std::fs::remove_dir_all(&gone).is_ok() && !gone.exists());
    assert!(removed, "{} could not be removed", gone.display());
    let logs = Logs::from([("loss", 1.0)]);
    let mut failed = (0..3)
        .map(|e| logger.on_epoch_end(e, &logs, &mut ctx))
        .any(|r| r.is_err());
    failed |= logger.on_train_end(&Logs::new(), &mut ctx).is_err();
    assert!(failed, "a failed background write was never reported");
}

#[test]
fn rows_still_on_their_way_at_a_checkpoint_are_in_its_state_and_a_resume_restores_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    // A straight run's file, for comparison.
    let straight_path = dir.path().join("straight.csv");
    let mut straight = CsvLogger::new(&straight_path);
    straight
        .on_train_begin(&Logs::new(), &mut ctx)
        .expect("begin");
    epochs(&mut straight, 0..4);
    let want = std::fs::read_to_string(&straight_path).expect("read");

    let path = dir.path().join("history.csv");
    let (mut logger, storage) = begun_in_background(&path, &mut ctx);
    epochs(&mut logger, 0..2);
    // The writes stall: epoch 2's row is handed over and waits, and the checkpoint taken
    // after epoch 2 carries what is not known written.
    storage.set(true, false);
    epochs(&mut logger, 2..3);
    let state = logger.state().expect("state");
    // The process dies: nothing more is written (released before any assertion: a held
    // write would keep the logger's drop waiting).
    storage.set(false, true);
    assert!(
        state.get("unwritten").is_some(),
        "epoch 2's row is still on its way: {state}"
    );
    drop(logger);
    let left = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        !left.contains("\n2,"),
        "epoch 2's row never reached the file: {left:?}"
    );

    // Resumed from that checkpoint (in the foreground or the background alike): every row.
    for background in [false, true] {
        std::fs::write(&path, &left).expect("the file as the dead run left it");
        let mut resumed = CsvLogger::new(&path).append(true).background(background);
        resumed.restore_state(&state).expect("restore");
        resumed
            .on_train_begin(&Logs::new(), &mut ctx)
            .expect("begin");
        epochs(&mut resumed, 3..4);
        resumed.on_train_end(&Logs::new(), &mut ctx).expect("end");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), want);
    }

    // Carried lines are untrusted: a line break inside one, or no line break, is refused.
    for bad in [
        serde_json::json!({"rows": 1, "unwritten": ["0,1\r\n1,2\r\n"]}),
        serde_json::json!({"rows": 1, "unwritten": ["0,1"]}),
        serde_json::json!({"rows": 1, "unwritten": {"lines": []}}),
        serde_json::json!({"rows": 1, "unwritten": [1]}),
    ] {
        assert!(CsvLogger::new(&path).restore_state(&bad).is_err(), "{bad}");
    }
}

#[test]
fn a_carried_row_replaces_an_earlier_attempts_row_of_its_epoch() {
    // Attempt 1 logs epochs 0 to 5 (losses 100 to 105) and crashes; the checkpoint after
    // its epoch 2 is resumed (attempt 2), whose epoch-3 row is on its way when it is killed,
    // leaving attempt 1's rows in the file; attempt 3 resumes from attempt 2's checkpoint
    // after epoch 3. The file ends with attempt 1's rows 0-2 and the later attempts' 3-5.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.csv");
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    let mut first = CsvLogger::new(&path);
    first.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    let mut after_2 = None;
    for e in 0..6 {
        let logs = Logs::from([("loss", 100.0 + e as f64), ("acc", 0.0)]);
        first.on_epoch_end(e, &logs, &mut ctx).expect("row");
        if e == 2 {
            after_2 = first.state();
        }
    }
    let after_2 = after_2.expect("state");

    let storage = std::sync::Arc::new(thread_log::ThreadLog::default());
    let mut second = CsvLogger::new(&path)
        .append(true)
        .storage(storage.clone())
        .background(true);
    second.restore_state(&after_2).expect("restore");
    second
        .on_train_begin(&Logs::new(), &mut ctx)
        .expect("begin");
    second
        .on_train_end(&Logs::new(), &mut ctx)
        .expect("the begin rewrite is written");
    storage.set(true, false);
    epochs(&mut second, 3..4);
    let after_3 = second.state().expect("state");
    storage.set(false, true);
    drop(second);
    assert!(
        std::fs::read_to_string(&path)
            .expect("read")
            .contains("\n3,0.0,103.0"),
        "the killed attempt left attempt 1's row 3"
    );

    // Resumed in the background, the row put back is not on storage until the begin's
    // rewrite lands: a checkpoint taken before then carries it again.
    let file_before = std::fs::read_to_string(&path).expect("read");
    let held = std::sync::Arc::new(thread_log::ThreadLog::default());
    let mut slow = CsvLogger::new(&path)
        .append(true)
        .storage(held.clone())
        .background(true);
    slow.restore_state(&after_3).expect("restore");
    held.set(true, false);
    let begun = slow.on_train_begin(&Logs::new(), &mut ctx);
    let carried = slow.state().expect("state");
    held.set(false, true);
    drop(slow);
    begun.expect("begin");
    let unwritten = carried["unwritten"].as_array().cloned().unwrap_or_default();
    assert!(
        unwritten
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.starts_with("3,"))),
        "{carried}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), file_before);

    let mut third = CsvLogger::new(&path).append(true);
    third.restore_state(&after_3).expect("restore");
    third.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    epochs(&mut third, 4..6);
    let text = std::fs::read_to_string(&path).expect("read");
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 7, "{text}");
    for (e, row) in rows[1..].iter().enumerate() {
        assert!(row.starts_with(&format!("{e},")), "{text}");
        assert_eq!(row.contains(&format!("{}.0", 100 + e)), e < 3, "{text}");
    }
}

#[test]
fn a_background_logger_s_drop_writes_every_row_and_leaves_its_thread_holding_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    let path = dir.path().join("history.csv");
    let (mut logger, storage) = begun_in_background(&path, &mut ctx);
    epochs(&mut logger, 0..3);
    // Dropped without on_train_end, rows possibly still on their way: the drop waits for
    // them, and afterwards no thread holds the storage.
    drop(logger);
    assert_eq!(
        std::sync::Arc::strong_count(&storage),
        1,
        "something still holds the storage after the logger is dropped"
    );
    let file = std::fs::read_to_string(&path).expect("read");
    assert_eq!(file.lines().count(), 4, "a header and three rows: {file:?}");
}

#[test]
fn a_side_writer_whose_storage_panics_fails_that_file_alone_and_still_lets_go_of_it() {
    use model_checkpoint::store::{Name, SideWriter};
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = std::sync::Arc::new(thread_log::ThreadLog::default());
    storage.panic_on("bad.csv");
    let mut writer = SideWriter::start(storage.clone()).expect("start");
    let name = |file: &str| Name::from(dir.path().join(file).as_path());
    writer
        .write(&name("bad.csv"), b"x\r\n".to_vec())
        .expect("handed over");
    let err = writer
        .flush()
        .expect_err("the panic is that file's failure");
    assert!(err.to_string().contains("panicked"), "{err}");
    // The thread goes on with the next file.
    writer
        .write(&name("good.csv"), b"y\r\n".to_vec())
        .expect("handed over");
    writer.flush().expect("written");
    assert_eq!(
        std::fs::read(dir.path().join("good.csv")).expect("read"),
        b"y\r\n"
    );
    drop(writer);
    assert_eq!(std::sync::Arc::strong_count(&storage), 1);
}

/// `path` after a logger resumed with `unwritten` as its checkpoint's carried lines begins.
fn begun_with_carried(path: &std::path::Path, unwritten: Vec<String>) -> String {
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    let mut logger = CsvLogger::new(path);
    let state = serde_json::json!({"rows": 0, "unwritten": unwritten});
    logger.restore_state(&state).expect("restore");
    logger
        .on_train_begin(&Logs::new(), &mut ctx)
        .expect("begin");
    std::fs::read_to_string(path).expect("read")
}

#[test]
fn carried_rows_go_in_place_by_epoch_the_last_of_an_epoch_winning_and_a_header_only_where_none_is()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.csv");
    let lines =
        |text: &str| -> Vec<String> { text.split_inclusive('\n').map(String::from).collect() };
    let file = "epoch,loss\r\n0,a\r\n1,a\r\n2,a\r\n3,a\r\n4,a\r\n5,a\r\n";
    // Out of order, epoch 2 twice, a header the file already has, an epoch past the file's.
    let carried = lines("4,c\r\n2,b\r\nepoch,other\r\n7,c\r\n2,c\r\n");
    std::fs::write(&path, file).expect("write");
    assert_eq!(
        begun_with_carried(&path, carried.clone()),
        "epoch,loss\r\n0,a\r\n1,a\r\n2,c\r\n3,a\r\n4,c\r\n5,a\r\n7,c\r\n"
    );
    // A file that lost every line gets the carried header and rows; rows with no header to
    // go under are left out.
    std::fs::write(&path, "").expect("write");
    assert_eq!(
        begun_with_carried(&path, carried),
        "epoch,other\r\n2,c\r\n4,c\r\n7,c\r\n"
    );
    std::fs::write(&path, "").expect("write");
    assert_eq!(begun_with_carried(&path, lines("0,a\r\n1,a\r\n")), "");
    // Rows of no epoch in the file stay where they are.
    std::fs::write(&path, "epoch,loss\r\n0,a\r\nnote\r\n3,a\r\n").expect("write");
    assert_eq!(
        begun_with_carried(&path, lines("1,b\r\n")),
        "epoch,loss\r\n0,a\r\n1,b\r\nnote\r\n3,a\r\n"
    );
}

#[test]
fn a_checkpoint_carrying_many_rows_is_restored_in_one_pass() {
    // A checkpoint is untrusted, and its carried rows are bounded by bytes only: 200,000
    // rows, in reverse order, put back among a file's 20,000 (a pass over the file for each
    // row would not finish in hours). A deadline stands for "it finishes".
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.csv");
    let mut file = String::from("epoch,loss\r\n");
    for e in (0..40_000).step_by(2) {
        file.push_str(&format!("{e},a\r\n"));
    }
    std::fs::write(&path, &file).expect("write");
    let carried: Vec<String> = (0..200_000).rev().map(|e| format!("{e},b\r\n")).collect();
    let (done, finished) = std::sync::mpsc::channel();
    let worker_path = path.clone();
    std::thread::spawn(move || {
        let _ = done.send(begun_with_carried(&worker_path, carried));
    });
    let text = finished
        .recv_timeout(std::time::Duration::from_secs(300))
        .expect("restoring the carried rows did not finish, or failed");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 200_000);
    for (e, row) in rows.iter().enumerate() {
        assert_eq!(*row, format!("{e},b"));
    }
}
