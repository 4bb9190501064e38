//! The saving engine: everything `ModelCheckpoint` does once Keras's decisions
//! (`super::decisions`) say "save to this name". It owns the storage and every effect on
//! it: the commit (in the foreground or on the writer thread), versions (`-vN`), the `last`
//! link, retention's deletes, the folder's lock, the run's identity and the markers that
//! prove ownership, and listing what the run saved.
//!
//! - `commit.rs`: a save from the model's tensors to a committed file (the payload, then
//!   the dispatch: foreground or the writer thread), and what follows it.
//! - `aftercare.rs`: what follows a committed save on storage (journal row, marker,
//!   `last`, retention's deletes), decided on the training thread and done there or, for a
//!   background save, on the writer thread.
//! - `sharded.rs`: the same for a multi-process run's sharded saves.
//! - `dedup.rs`: deduplicated saves (blobs, a head, an index) and the collection of blobs
//!   no index names.
//! - `names.rs`: which names the engine may write.
//! - `ownership.rs`: the run's identity, and the proof of ownership retention needs.
//! - `listing.rs`: what the run saved that is still there (best, latest).
//! - `journal.rs`: the CSV journal of saves and deletes.
//!
//! [`Config`] is what the builder decided; [`Engine`] adds the running state.

mod aftercare;
mod commit;
mod dedup;
mod journal;
mod listing;
mod names;
mod ownership;
mod sharded;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::background::BackgroundWriter;
use crate::policy::{Direction, Retention, SavedFile};
use crate::store::{Commit, Kind, LocalFolder, Name, SaveOptions, Storage};
use crate::Logs;

pub(crate) use names::check_length;
pub(crate) use ownership::valid_run_id;

/// Where the `last` link goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Last {
    Off,
    /// `last.safetensors` in the template's folder.
    Beside,
    /// A path of the caller's choosing.
    At(Name),
}

/// What the engine carries across resumes (inside the callback's state in full
/// checkpoints).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Saved {
    /// The path of the last committed save.
    pub last_saved: Option<Name>,
    /// Saves committed.
    pub saves: u64,
    /// The files retention tracks, with their monitored values (only with retention on).
    pub kept: Vec<SavedFile>,
    /// The next save's sequence number.
    pub seq: u64,
    /// The run's identity, written into every file it saves.
    pub run_id: Option<String>,
    /// With `overwrite(false)`: for each name that collided, the next version to try.
    pub versions: BTreeMap<String, u64>,
}

/// A save that is due: where, what kind, how it commits, at which point of training, and
/// how retention ranks it. The callback's decisions make it; the engine plans it
/// ([`Engine::plan`]) and writes it once the round of hooks is over
/// ([`Engine::run_planned`]), so that a full checkpoint holds every callback's state as of
/// the end of that round.
pub(crate) struct Job {
    pub path: Name,
    pub kind: Kind,
    /// Whether the commit may replace an object at `path`.
    pub commit: Commit,
    /// 0-based, as the hooks pass it.
    pub epoch: i64,
    /// 0-based, for a save inside an epoch.
    pub batch: Option<i64>,
    pub logs: Logs,
    pub monitor: String,
    pub direction: Direction,
    pub global_step: u64,
    /// For a save on a signal, the signal: such a save is written and made durable before
    /// the round ends, even when saves run in the background, and not counted in the run's
    /// state (a resumed run then goes on exactly as one that was never interrupted).
    pub signal: Option<&'static str>,
}

impl Job {
    /// Whether this is a save on a signal.
    pub fn interrupt(&self) -> bool {
        self.signal.is_some()
    }
}

/// What a job of the writer thread did.
enum Written {
    /// One file, committed.
    File(crate::store::SaveReport),
    /// This rank's shard of a sharded checkpoint, and the commit (the index) as the rank's
    /// part in it requires: written on rank 0, seen on the others.
    Folder(crate::sharded::Ranks),
    /// Not a save: what followed one on storage (see `aftercare.rs`).
    Aftercare(aftercare::Done),
}

/// A planned save: the job, and what it will be tracked as once committed.
struct Planned {
    job: Job,
    pending: Pending,
}

/// A save in flight, and what it will be tracked as once committed.
struct Pending {
    file: SavedFile,
    /// The monitor's direction at the time of the save, which retention ranks by.
    direction: Direction,
    /// What the journal records of it besides.
    kind: Kind,
    batch: Option<i64>,
    global_step: u64,
    monitor: String,
    /// Whether it counts in the run's state (saves, last saved, retention): every save but
    /// one on a signal.
    counted: bool,
}

/// What retention does with a file its rules no longer keep.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Deleted, or left alone for good (not provably this run's): no longer tracked.
    Forget,
    /// Not deleted this time: tracked, to try again at the next save.
    Keep,
}

/// Where and what a sharded save writes.
pub(crate) struct Shard<'a> {
    pub ranks: crate::sharded::Ranks,
    pub path: &'a Name,
    pub kind: Kind,
    pub layout: &'a BTreeMap<String, crate::model::Placement>,
    pub step: u64,
    /// A save on a signal: written in the foreground, after every save in flight.
    pub interrupt: bool,
}

/// What a [`ModelCheckpoint`](super::ModelCheckpoint)'s builder decides about saving.
/// Only the builder (`model_checkpoint/options.rs`) writes it; the engine only reads it
/// (`tests/layers.rs` checks both).
pub(crate) struct Config {
    /// The filepath template (what the engine's folder, names and ownership derive from),
    /// set once by [`Config::new`]: private, so that it cannot change under `folder`.
    template: String,
    /// The template's folder (see [`Engine::folder`]), worked out once: a save asks for it
    /// several times.
    folder: Name,
    pub storage: Arc<dyn Storage>,
    pub options: SaveOptions,
    pub background: bool,
    pub max_in_flight: usize,
    pub retention: Retention,
    pub last: Last,
    pub overwrite: bool,
    /// This process among those of a multi-process run: saves are sharded checkpoints.
    pub ranks: Option<crate::sharded::Ranks>,
    /// Saves are deduplicated checkpoints: an index naming content-addressed blobs shared
    /// between checkpoints (`crate::sharded::blobs`).
    pub dedup: bool,
    /// Deduplicated saves compress the blobs they write (`crate::sharded::codec`).
    pub compress: bool,
    /// How long a sharded save's coordinator waits for the shards (and the others for the
    /// index).
    pub commit_options: crate::sharded::CommitOptions,
    /// The ranks' own collective, used instead of polling the storage.
    pub barrier: Option<Arc<dyn crate::sharded::Barrier>>,
    /// Whether the run id was given (then a checkpoint with another may not resume).
    pub explicit_run_id: bool,
    /// Whether saves on a signal are on (their names are then reserved).
    pub interrupt_saves: bool,
}

impl Config {
    /// The filepath template.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Where saves are folders with an index (a sharded run, or deduplicated saves, which
    /// are one process's "sharded" checkpoints): this process among the run's.
    pub fn folder_ranks(&self) -> Option<crate::sharded::Ranks> {
        self.ranks
            .or(self.dedup.then(crate::sharded::Ranks::single))
    }

    /// Keras's behaviour for `template`: the local file system, overwrite, no retention,
    /// no `last`, foreground saves.
    fn new(template: String) -> Self {
        Config {
            folder: fixed_folder(&Name::from(template.as_str())),
            template,
            storage: Arc::new(LocalFolder::default()),
            options: SaveOptions::default(),
            background: false,
            max_in_flight: 1,
            retention: Retention::default(),
            last: Last::Off,
            overwrite: true,
            ranks: None,
            dedup: false,
            compress: false,
            commit_options: crate::sharded::CommitOptions::default(),
            barrier: None,
            explicit_run_id: false,
            interrupt_saves: false,
        }
    }
}

/// The part of `template`'s folder without placeholders (see [`Engine::folder`]).
fn fixed_folder(template: &Name) -> Name {
    let parent = template.parent();
    let fixed = parent
        .components()
        .take_while(|c| !c.contains(['{', '}']))
        .collect::<Vec<_>>()
        .join("/");
    template.root_name().join(&fixed)
}

/// The saving engine: its configuration and the state of the run (see the module's
/// documentation).
pub(crate) struct Engine {
    pub config: Config,
    /// What is carried across resumes.
    pub saved: Saved,
    /// The save id of the sharded checkpoint this run resumed from, if any.
    pub resumed_from: Option<String>,
    /// Whether the engine may act as the run its id names: it made the id, was given it,
    /// or confirmed that the checkpoint it resumed was written by that run.
    run_confirmed: bool,
    lock: Option<Box<dyn std::any::Any + Send>>,
    writer: Option<BackgroundWriter<Written>>,
    /// What follows background saves the writer committed, not yet handed to it (see
    /// `Engine::send_aftercare`).
    pending_aftercare: Vec<super::background::RunFn<Written>>,
    in_flight: VecDeque<Pending>,
    /// The files committed since the engine was made (always its own).
    session_saved: BTreeSet<Name>,
    /// The header digest of each file committed since the engine was made, by path.
    session_digests: BTreeMap<Name, [u8; 32]>,
    /// The journal of saves and deletes, when asked for.
    pub journal: Option<journal::Journal>,
    /// Saves decided in the current round of hooks, written at its end.
    planned: Vec<Planned>,
    /// Where the last save on a signal went, once durable.
    pub interrupt_saved: Option<Name>,
    /// Whether the engine took its state from a checkpoint (a resumed run).
    resumed: bool,
    /// The blobs of deduplicated saves this process knows are there.
    known_blobs: crate::sharded::blobs::KnownBlobs,
    /// The blob folder's lock, taken at the first deduplicated save (which clears the
    /// temporary files a killed save left there), released with the folder's.
    blobs_lock: Option<Box<dyn std::any::Any + Send>>,
    /// Whether this process has collected unnamed blobs yet (it does once, at its first
    /// deduplicated save, for what a crash of the run left).
    blobs_collected: bool,
    /// The collection of blobs running on a helper thread (`dedup.rs`).
    collecting: Option<std::thread::JoinHandle<Result<crate::sharded::blobs::Collected, String>>>,
    /// Whether the warning about other runs in the folder was given.
    warned_other_runs: bool,
    /// Whether the model was seen to hand over the training state a full checkpoint needs
    /// (checked once, before the first full save's message).
    full_checked: bool,
    /// The folder the last save made (or found) in the hook: see [`Engine::prepare_folder`].
    folder_made: Option<Name>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("template", &self.config.template)
            .field("options", &self.config.options)
            .field("background", &self.config.background)
            .field("max_in_flight", &self.config.max_in_flight)
            .field("retention", &self.config.retention)
            .field("last", &self.config.last)
            .field("overwrite", &self.config.overwrite)
            .field("saved", &self.saved)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine saving by `template` to the local file system, with Keras's behaviour
    /// (overwrite, no retention, no `last`, foreground saves).
    pub fn new(template: String) -> Self {
        Engine {
            config: Config::new(template),
            saved: Saved::default(),
            resumed_from: None,
            run_confirmed: false,
            lock: None,
            writer: None,
            pending_aftercare: Vec::new(),
            in_flight: VecDeque::new(),
            session_saved: BTreeSet::new(),
            session_digests: BTreeMap::new(),
            journal: None,
            planned: Vec::new(),
            interrupt_saved: None,
            resumed: false,
            known_blobs: Default::default(),
            blobs_lock: None,
            blobs_collected: false,
            collecting: None,
            warned_other_runs: false,
            full_checked: false,
            folder_made: None,
        }
    }

    /// The part of the template's folder without placeholders: the folder the engine
    /// locks and lists (`.` when the first folder level already has placeholders).
    /// A URL keeps its root (`s3://bucket/run`): see [`Name`].
    pub fn folder(&self) -> Name {
        self.config.folder.clone()
    }

    /// The template as a name (checked by `check_template`; a template that is not a valid
    /// name is taken as written, and refused by the storage).
    pub fn template_name(&self) -> Name {
        Name::from(self.config.template.as_str())
    }

    /// The `last` link's path, if on.
    pub fn last_path(&self) -> Option<Name> {
        match &self.config.last {
            Last::Off => None,
            Last::Beside => Some(self.folder().join(crate::store::LAST_FILE)),
            Last::At(p) => Some(p.clone()),
        }
    }

    /// Makes the folders above `path` (resolved lexically, as Keras's `gfile` does), and
    /// takes the lock once the folder exists. The folder's name is checked against the file
    /// system's limits here, where it is created (Keras fails here too).
    /// `makes_folder` is Keras's rule for which folders it makes (tf.keras 2 makes none
    /// under `gs://`).
    ///
    /// Once a background save has made the folder and its lock is held, later saves to the
    /// same folder leave making it again to the writer thread, just before it writes there
    /// ([`Engine::folder_to_make`]): looking the folder up costs the hook a walk of its path
    /// in the kernel (about a third of a small model's hook), and a folder removed while
    /// training runs is still made again at the next save, as Keras does.
    pub fn prepare_folder(
        &mut self,
        path: &Name,
        makes_folder: impl Fn(&Name) -> bool,
    ) -> Result<(), crate::Error> {
        let dir = path.parent();
        if !dir.is_top() {
            names::check_length(dir.as_str())?;
            if makes_folder(&dir) && self.folder_to_make(path).is_none() {
                self.config.storage.prepare_dir(&dir)?;
                self.folder_made = Some(dir);
            }
        }
        self.ensure_lock()
    }

    /// Makes the folder [`Engine::prepare_folder`] left to the writer for a save to `path`,
    /// for an attempt that saves nothing after all (tf.keras 2 makes the folder before it
    /// looks at the monitor, whether or not it saves).
    pub fn make_folder_left_to_writer(&self, path: &Name) -> Result<(), crate::Error> {
        commit::make_folder(&*self.config.storage, self.folder_to_make(path).as_ref())
    }

    /// The folder that a background save to `path` makes before writing (on the writer
    /// thread, or here for a save on a signal), because the hook left that to it: the
    /// folder the previous save made, once its lock is held. Saves that write folders
    /// (sharded, deduplicated) make theirs in the hook.
    fn folder_to_make(&self, path: &Name) -> Option<Name> {
        let writes_one_file =
            self.config.background && !self.config.dedup && self.config.folder_ranks().is_none();
        if !writes_one_file || self.lock.is_none() {
            return None;
        }
        self.folder_made.clone().filter(|dir| *dir == path.parent())
    }

    /// Takes the folder's lock (and clears stale temporary files) if not held yet and the
    /// folder exists; Keras creates folders only when saving, so this never creates one.
    pub fn ensure_lock(&mut self) -> Result<(), crate::Error> {
        // In a multi-process run the coordinator holds the folder for all ranks.
        if self.config.ranks.is_some_and(|r| r.rank != 0) {
            return Ok(());
        }
        if self.lock.is_none() {
            let dir = self.folder();
            if let Some(guard) = self.config.storage.lock(&dir)? {
                self.lock = Some(guard);
            }
        }
        Ok(())
    }

    /// Waits for saves in flight, lets the snapshot buffers go, and releases the lock.
    pub fn finish(&mut self) -> Result<(), crate::Error> {
        let flushed = self.flush();
        if let Some(writer) = &mut self.writer {
            writer.release_buffers();
        }
        self.blobs_lock = None;
        self.lock = None;
        flushed
    }

    /// `path`, or with `overwrite` off and `path` taken, the next free `NAME-vN.EXT` (of the
    /// next 100,000: a storage that calls every name taken gets an error, not a loop).
    ///
    /// Versions only go up: once `NAME` has collided, each later save of it starts from the
    /// version after the last one given, even if retention has deleted older ones since. A
    /// name therefore never depends on when a background save's retention ran, and a
    /// resumed run (which restores the counters) names its saves as one that never stopped.
    ///
    /// In a multi-process run a folder is taken once it has an index: every rank sees the
    /// same (a save's index needs every rank's shard, and each rank waits for the previous
    /// save's index), so every rank picks the same name.
    pub fn free_path(&mut self, path: Name) -> Result<Name, crate::Error> {
        if self.config.overwrite {
            return Ok(path);
        }
        let key = path.to_string();
        let first = self.saved.versions.get(&key).copied().unwrap_or(0);
        let found = self.first_free(&path, first)?;
        if found.0 > 0 {
            self.saved.versions.insert(key, found.0.saturating_add(1));
        }
        Ok(found.1)
    }

    /// The first version of `path` from `first` on (0: `path` itself) that nothing takes.
    fn first_free(&self, path: &Name, first: u64) -> Result<(u64, Name), crate::Error> {
        // Names of saves still in flight on the writer thread, or planned in this round,
        // are taken too: they are not there yet.
        let pending = |p: &Name| {
            self.in_flight
                .iter()
                .chain(self.planned.iter().map(|planned| &planned.pending))
                .any(|pending| pending.file.path == *p)
        };
        let taken = |p: &Name| match self.config.folder_ranks() {
            _ if pending(p) => Ok(true),
            Some(_) => self
                .config
                .storage
                .exists(&p.join(crate::sharded::INDEX_FILE)),
            None => self.config.storage.taken(p),
        };
        let stem = path.file_stem().unwrap_or_default();
        let ext = path
            .extension()
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        for v in first..=first.saturating_add(100_000) {
            let candidate = if v == 0 {
                path.clone()
            } else {
                path.with_file_name(&format!("{stem}-v{v}{ext}"))
            };
            if !taken(&candidate)? {
                return Ok((v, candidate));
            }
        }
        Err(crate::Error::AlreadyExists {
            name: format!("{path} (and its next 100,000 versions)"),
        })
    }
}

impl Drop for Engine {
    /// Waits for background saves still in flight, so that none is lost silently; a
    /// failure that nobody collected (no `flush` or `on_train_end` after it) is logged at
    /// error level.
    fn drop(&mut self) {
        self.settle_collection();
        let busy = self.writer.as_ref().is_some_and(|w| w.in_flight() > 0);
        if busy || !self.pending_aftercare.is_empty() {
            if let Err(e) = self.flush() {
                log::error!(target: "model_checkpoint", "a background save failed and was never reported: {e}");
            }
        }
    }
}
