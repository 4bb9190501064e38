//! `ModelCheckpoint::journal` records every committed save and every file retention deleted
//! beside the checkpoints, continues across runs, and never fails a save; listings skip it.

use model_checkpoint::store::{list, JOURNAL_FILE};
use model_checkpoint::{
    Callback, Checkpointable, Context, Error, HostTensor, Logs, ModelCheckpoint, NamedTensor,
};

struct Toy;

impl Checkpointable for Toy {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![2], &[1.0, 2.0]),
        )])
    }
}

fn train(cb: &mut ModelCheckpoint, epochs: std::ops::Range<usize>) {
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    for e in epochs {
        cb.on_epoch_begin(e, &Logs::new(), &mut ctx).expect("begin");
        // val_loss falls, then rises at epoch 3.
        let v = if e == 3 { 0.9 } else { 1.0 / (e as f64 + 1.0) };
        cb.on_epoch_end(e, &Logs::from([("val_loss", v)]), &mut ctx)
            .expect("save");
    }
    cb.on_train_end(&Logs::new(), &mut ctx).expect("end");
}

fn rows(dir: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join(JOURNAL_FILE))
        .expect("journal")
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn saves_and_deletes_are_recorded_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("w.{epoch:02d}.safetensors");
    let mut cb = ModelCheckpoint::new(&template)
        .save_weights_only(true)
        .keep_last(2)
        .journal(true);
    train(&mut cb, 0..5);
    let rows = rows(dir.path());
    assert_eq!(
        rows[0],
        [
            "seq",
            "event",
            "epoch",
            "batch",
            "global_step",
            "kind",
            "path",
            "monitor",
            "value",
            "run_id"
        ]
    );
    let events: Vec<(String, String, String)> = rows[1..]
        .iter()
        .map(|r| {
            (
                r[1].clone(),
                r[2].clone(),
                r[6].rsplit('/').next().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let saved = |e: u32| {
        (
            "saved".to_owned(),
            e.to_string(),
            format!("w.{e:02}.safetensors"),
        )
    };
    let deleted = |e: u32| {
        (
            "deleted".to_owned(),
            e.to_string(),
            format!("w.{e:02}.safetensors"),
        )
    };
    // keep_last 2 plus the best (epoch 3, val_loss 1/3 … until epoch 5's 0.2).
    assert_eq!(
        events,
        [
            saved(1),
            saved(2),
            saved(3),
            deleted(1),
            saved(4),
            deleted(2),
            saved(5),
            deleted(3)
        ],
        "{rows:?}"
    );
    assert!(
        rows[1..]
            .iter()
            .all(|r| r[9] == rows[1][9] && !r[9].is_empty()),
        "one run id"
    );
    assert_eq!(rows[1][5], "weights");
    assert_eq!(rows[1][7], "val_loss");
    assert_eq!(rows[1][8], "1.0");
    // Listings skip it, as they skip the markers.
    let listed = list(dir.path()).expect("list");
    assert!(
        listed
            .iter()
            .all(|l| !l.path.as_str().ends_with(JOURNAL_FILE)),
        "{listed:?}"
    );
}

#[test]
fn a_second_run_continues_the_journal_and_replaced_saves_are_kept_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let best = dir.path().join("best.safetensors");
    let mut cb = ModelCheckpoint::new(&best)
        .save_best_only(true)
        .save_weights_only(true)
        .journal(true);
    train(&mut cb, 0..2);
    let mut again = ModelCheckpoint::new(&best)
        .save_weights_only(true)
        .journal(true);
    train(&mut again, 2..3);
    let rows = rows(dir.path());
    let saves: Vec<&str> = rows[1..].iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        saves,
        ["1", "2", "3"],
        "one save per epoch, one path, both runs: {rows:?}"
    );
    assert_ne!(rows[1][9], rows[3][9], "each row names its run");
}

#[test]
fn a_journal_that_cannot_be_written_never_fails_a_save() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A folder where the journal would go.
    std::fs::create_dir(dir.path().join(JOURNAL_FILE)).expect("blocker");
    let mut cb = ModelCheckpoint::new(dir.path().join("w.{epoch}.safetensors"))
        .save_weights_only(true)
        .journal(true);
    train(&mut cb, 0..2);
    assert!(dir.path().join("w.2.safetensors").exists());
}

/// Two callbacks that keep a journal in one folder (Keras users pair an every-epoch
/// checkpoint with a best-only one): every save of both is a row, whichever wrote last.
#[test]
fn two_callbacks_keeping_a_journal_in_one_folder_keep_each_others_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut every = ModelCheckpoint::new(dir.path().join("w.{epoch:02d}.safetensors"))
        .save_weights_only(true)
        .journal(true);
    let mut best = ModelCheckpoint::new(dir.path().join("best.safetensors"))
        .save_weights_only(true)
        .save_best_only(true)
        .journal(true);
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    for cb in [&mut every, &mut best] {
        cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    }
    for e in 0..4 {
        let v = if e == 2 { 0.9 } else { 1.0 / (e as f64 + 1.0) };
        for cb in [&mut every, &mut best] {
            cb.on_epoch_begin(e, &Logs::new(), &mut ctx).expect("begin");
            cb.on_epoch_end(e, &Logs::from([("val_loss", v)]), &mut ctx)
                .expect("save");
        }
    }
    for cb in [&mut every, &mut best] {
        cb.on_train_end(&Logs::new(), &mut ctx).expect("end");
    }
    let mut saved: Vec<String> = rows(dir.path())[1..]
        .iter()
        .filter(|r| r[1] == "saved")
        .map(|r| format!("{}:{}", r[2], r[6].rsplit('/').next().unwrap_or("")))
        .collect();
    saved.sort();
    // Epoch 3 (0.9) is no improvement on epoch 2 (0.5): the best-only callback skips it.
    assert_eq!(
        saved,
        [
            "1:best.safetensors",
            "1:w.01.safetensors",
            "2:best.safetensors",
            "2:w.02.safetensors",
            "3:w.03.safetensors",
            "4:best.safetensors",
            "4:w.04.safetensors",
        ],
        "{:?}",
        std::fs::read_to_string(dir.path().join(JOURNAL_FILE))
    );
}

/// Drives `cb` through epoch `e` (`on_train_begin` before the first).
fn epoch(cb: &mut ModelCheckpoint, e: usize) {
    let toy = Toy;
    let mut ctx = Context::new(&toy);
    if e == 0 {
        cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    }
    cb.on_epoch_begin(e, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(e, &Logs::from([("val_loss", 1.0)]), &mut ctx)
        .expect("save");
}

#[test]
fn rows_a_failed_write_did_not_carry_go_with_the_next_and_an_edit_keeps_its_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join(JOURNAL_FILE);
    let mut cb = ModelCheckpoint::new(dir.path().join("w.{epoch}.safetensors"))
        .save_weights_only(true)
        .journal(true);
    epoch(&mut cb, 0);
    let first = std::fs::read(&journal).expect("journal");
    // Saved again by an editor that drops the last line break.
    std::fs::write(&journal, first.strip_suffix(b"\r\n").expect("a line")).expect("edit");
    epoch(&mut cb, 1);
    // Something else at its name for a while: the row of epoch 3 cannot be written.
    let edited = std::fs::read(&journal).expect("journal");
    std::fs::remove_file(&journal).expect("remove");
    std::fs::create_dir(&journal).expect("blocker");
    epoch(&mut cb, 2);
    std::fs::remove_dir(&journal).expect("unblock");
    std::fs::write(&journal, edited).expect("put back");
    epoch(&mut cb, 3);
    cb.on_train_end(&Logs::new(), &mut Context::new(&Toy))
        .expect("end");
    let saved: Vec<(String, String)> = rows(dir.path())[1..]
        .iter()
        .map(|r| (r[1].clone(), r[2].clone()))
        .collect();
    let want: Vec<(String, String)> = (1..=4)
        .map(|e| ("saved".to_owned(), e.to_string()))
        .collect();
    assert_eq!(saved, want, "{:?}", std::fs::read_to_string(&journal));
}
