//! Listings with bounds: page by page, at most [`MAX_LIST_PAGES`] pages and
//! [`MAX_LISTED_OBJECTS`] objects kept, and never the same continuation token twice, so that
//! a server that lists forever gives an error rather than a hang or an abort.
//!
//! object_store's own `list` follows continuation tokens for as long as the server hands
//! them out; its paginated interface (S3 and GCS) lets each page be counted. A store without
//! it (one handed to [`crate::ObjectStorage::with_store`], Azure) is listed with `list`,
//! counting objects only.

use std::borrow::Cow;
use std::io;

use futures_util::StreamExt;
use model_checkpoint::Error;
use object_store::list::PaginatedListOptions;
use object_store::path::Path as Key;
use object_store::ObjectMeta;

use crate::errors::remote;
use crate::limits::{MAX_LISTED_OBJECTS, MAX_LIST_PAGES};
use crate::Inner;

/// How much of a listing to read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Pages to read at most.
    pub pages: usize,
    /// Past this many pages, stop quietly (the listing is partial) rather than fail.
    pub partial_ok: bool,
}

impl Bounds {
    /// A whole listing, or an error.
    pub const WHOLE: Bounds = Bounds {
        pages: MAX_LIST_PAGES,
        partial_ok: false,
    };
}

/// The objects under `prefix` (`dir` names it in errors), one level deep with
/// `one_level`, whose keys `keep` accepts. Also whether the listing was read to its end.
pub(crate) fn objects(
    inner: &Inner,
    dir: &str,
    prefix: &Key,
    one_level: bool,
    bounds: Bounds,
    keep: impl Fn(&Key) -> bool,
) -> Result<(Vec<ObjectMeta>, bool), Error> {
    let mut out = Vec::new();
    let mut add = |objects: Vec<ObjectMeta>| -> Result<(), Error> {
        for object in objects {
            // The server's word is checked: an object it lists outside the folder asked
            // for is never taken for one of the folder's.
            if !object.location.prefix_matches(prefix) {
                return Err(refused(
                    inner,
                    dir,
                    format!(
                        "the server listed {:?}, which is not in it",
                        crate::names::shorten(object.location.as_ref())
                    ),
                ));
            }
            if keep(&object.location) {
                if out.len() >= MAX_LISTED_OBJECTS {
                    return Err(refused(
                        inner,
                        dir,
                        format!(
                            "it holds more than {MAX_LISTED_OBJECTS} objects, more than a listing returns"
                        ),
                    ));
                }
                out.push(object);
            }
        }
        Ok(())
    };
    let Some(pages) = inner.pages.clone() else {
        // No pages to count: objects are counted, one page's worth at a time.
        let store = inner.objects.clone();
        let prefix = (!prefix.as_ref().is_empty()).then(|| prefix.clone());
        let limit = bounds.pages.saturating_mul(1000);
        let mut seen = 0usize;
        let mut stream = store.list(prefix.as_ref());
        loop {
            let batch = inner.runtime.block_on(async {
                let mut batch = Vec::new();
                while batch.len() < 1000 {
                    match stream.next().await {
                        Some(Ok(meta)) => batch.push(meta),
                        Some(Err(e)) => return Err(e),
                        None => break,
                    }
                }
                Ok(batch)
            });
            let batch = batch.map_err(|e| remote(inner, "list", dir, e))?;
            let last = batch.len() < 1000;
            seen = seen.saturating_add(batch.len());
            add(batch)?;
            if last {
                return Ok((out, true));
            }
            if seen >= limit {
                if bounds.partial_ok {
                    return Ok((out, false));
                }
                return Err(refused(
                    inner,
                    dir,
                    format!("it lists more than {limit} names"),
                ));
            }
        }
    };
    // S3 does not add the delimiter to the prefix as object_store's `list` does.
    let prefix = (!prefix.as_ref().is_empty()).then(|| format!("{}/", prefix.as_ref()));
    let mut token: Option<String> = None;
    for _ in 0..bounds.pages {
        let options = PaginatedListOptions {
            delimiter: one_level.then_some(Cow::Borrowed("/")),
            max_keys: Some(1000),
            page_token: token.clone(),
            ..PaginatedListOptions::default()
        };
        let store = pages.clone();
        let prefix = prefix.clone();
        let page = inner
            .runtime
            .block_on(async move { store.list_paginated(prefix.as_deref(), options).await })
            .map_err(|e| remote(inner, "list", dir, e))?;
        add(page.result.objects)?;
        match page.page_token {
            None => return Ok((out, true)),
            Some(next) if token.as_ref() == Some(&next) => {
                return Err(refused(
                    inner,
                    dir,
                    "the server handed the same continuation token twice: its listing never ends"
                        .to_owned(),
                ));
            }
            Some(next) => token = Some(next),
        }
    }
    if bounds.partial_ok {
        return Ok((out, false));
    }
    Err(refused(
        inner,
        dir,
        format!(
            "the listing goes on past {} pages of up to 1000 names",
            bounds.pages
        ),
    ))
}

/// A listing of `dir` refused for `reason`.
fn refused(inner: &Inner, dir: &str, reason: String) -> Error {
    Error::Io {
        action: "list",
        path: crate::names::shorten(dir).into(),
        source: io::Error::other(format!(
            "{reason} (endpoint {}): check that AWS_ENDPOINT_URL names an S3 server, or choose a folder of its own for the checkpoints",
            inner.endpoint
        )),
    }
}
