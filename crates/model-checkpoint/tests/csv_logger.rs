//! `CsvLogger` writes what Keras's `CSVLogger` writes, and a resumed run continues the file
//! from the rows its checkpoint had logged.

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
