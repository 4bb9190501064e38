//! The file layout: a safetensors header whose `__metadata__` carries the format name and
//! version, the kind of checkpoint, and checksums of every tensor and of the header itself.

use std::collections::BTreeMap;

use crate::model::Dtype;

/// `__metadata__["format"]` of every file this crate writes.
pub const FORMAT_NAME: &str = "model-checkpoint";
/// `__metadata__["format_version"]` this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Tensor names starting with this hold training state (optimizer moments) in full
/// checkpoints; model weights may not use it.
pub const TRAINING_PREFIX: &str = "__training__/";

pub(crate) const KEY_FORMAT: &str = "format";
pub(crate) const KEY_VERSION: &str = "format_version";
pub(crate) const KEY_KIND: &str = "kind";
pub(crate) const KEY_ALGORITHM: &str = "checksum_algorithm";
pub(crate) const KEY_TENSOR_SUMS: &str = "tensor_checksums";
pub(crate) const KEY_HEADER_SUM: &str = "header_checksum";
pub(crate) const ALGORITHM: &str = "crc32";
/// What a checksum reads before it is known; the same width as a real one, so that the
/// header can be patched in place.
pub(crate) const PLACEHOLDER: &str = "00000000";

/// The metadata keys the format itself writes: a caller's metadata may not use them.
pub const RESERVED_KEYS: [&str; 6] = [
    KEY_FORMAT,
    KEY_VERSION,
    KEY_KIND,
    KEY_ALGORITHM,
    KEY_TENSOR_SUMS,
    KEY_HEADER_SUM,
];

/// What a checkpoint file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The model's weights only (Keras's `save_weights_only=True`).
    Weights,
    /// Weights plus everything needed to resume training exactly.
    Full,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Weights => "weights",
            Kind::Full => "full",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        match s {
            "weights" => Some(Kind::Weights),
            "full" => Some(Kind::Full),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tensor's entry in the header.
pub(crate) struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

pub(crate) fn crc_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

/// The header text, padded with spaces to a multiple of 8 bytes as safetensors pads it.
/// `sums` gives each tensor's checksum in entry order; `header_sum` the header's.
///
/// The JSON is what a `serde_json` object of the same values writes (keys sorted, as
/// `serde_json` sorts them without its `preserve_order` feature; here they are sorted
/// whatever the features), built from borrowed maps rather than owned values: it is written
/// twice per save (the draft, then with the checksums), on the writer thread of a
/// background save.
pub(crate) fn header_text(
    entries: &[Entry],
    info: &BTreeMap<String, String>,
    sums: &[String],
    header_sum: &str,
) -> serde_json::Result<String> {
    let tensor_sums: BTreeMap<&str, &str> = entries
        .iter()
        .zip(sums)
        .map(|(e, s)| (e.name.as_str(), s.as_str()))
        .collect();
    let tensor_sums = serde_json::to_string(&tensor_sums)?;
    let mut metadata: BTreeMap<&str, &str> =
        info.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    metadata.insert(KEY_TENSOR_SUMS, &tensor_sums);
    metadata.insert(KEY_HEADER_SUM, header_sum);
    let mut header: BTreeMap<&str, HeaderValue<'_>> = BTreeMap::new();
    header.insert("__metadata__", HeaderValue::Metadata(&metadata));
    for e in entries {
        header.insert(
            &e.name,
            HeaderValue::Tensor(TensorEntry {
                data_offsets: [e.start, e.end],
                dtype: e.dtype,
                shape: &e.shape,
            }),
        );
    }
    let mut text = serde_json::to_string(&header)?;
    let padded = text.len().next_multiple_of(8);
    text.extend(std::iter::repeat_n(' ', padded - text.len()));
    Ok(text)
}

/// A value of the header's top-level object.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum HeaderValue<'a> {
    Metadata(&'a BTreeMap<&'a str, &'a str>),
    Tensor(TensorEntry<'a>),
}

/// A tensor's entry, its fields in sorted order (as an object of them is written).
#[derive(serde::Serialize)]
struct TensorEntry<'a> {
    data_offsets: [usize; 2],
    dtype: Dtype,
    shape: &'a [usize],
}

/// Whether `info` belongs to a file of this format: it names the format, or carries any of
/// the format's checksum keys. Files from other tools (`{"format": "pt"}` from PyTorch and
/// Hugging Face, `"np"` from numpy) are not, and load unverified; but a damaged `format`
/// field cannot turn verification off while the checksums are there.
pub(crate) fn is_own(info: &BTreeMap<String, String>) -> bool {
    info.get(KEY_FORMAT).map(String::as_str) == Some(FORMAT_NAME)
        || [KEY_ALGORITHM, KEY_TENSOR_SUMS, KEY_HEADER_SUM]
            .iter()
            .any(|k| info.contains_key(*k))
}

/// A checksum as written: exactly eight lowercase hex digits, nothing else.
pub(crate) fn parse_crc_hex(text: &str) -> Option<u32> {
    let canonical = text.len() == PLACEHOLDER.len()
        && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    canonical
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
}

/// The byte range of the header checksum's eight hex digits within the header text, if the
/// text holds exactly one.
pub(crate) fn header_sum_range(header: &[u8]) -> Option<std::ops::Range<usize>> {
    let pattern = format!("\"{KEY_HEADER_SUM}\":\"");
    let pattern = pattern.as_bytes();
    let finder = memchr::memmem::Finder::new(pattern);
    let first = finder.find(header)?;
    // Any other occurrence, overlapping the first included.
    if finder.find(&header[first + 1..]).is_some() {
        return None;
    }
    let start = first + pattern.len();
    let end = start + PLACEHOLDER.len();
    (end <= header.len()).then_some(start..end)
}

/// The checksum of a header: CRC-32 of its text with the header checksum's digits zeroed.
pub(crate) fn header_checksum(header: &[u8], range: std::ops::Range<usize>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..range.start]);
    hasher.update(PLACEHOLDER.as_bytes());
    hasher.update(&header[range.end..]);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value as Json};

    /// The header as a `serde_json` object of owned values writes it: what `header_text`
    /// must write byte for byte.
    fn header_text_of_values(
        entries: &[Entry],
        info: &BTreeMap<String, String>,
        sums: &[String],
        header_sum: &str,
    ) -> String {
        let mut metadata: Map<String, Json> = info
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect();
        let tensor_sums: Map<String, Json> = entries
            .iter()
            .zip(sums)
            .map(|(e, s)| (e.name.clone(), Json::String(s.clone())))
            .collect();
        metadata.insert(
            KEY_TENSOR_SUMS.into(),
            Json::String(Json::Object(tensor_sums).to_string()),
        );
        metadata.insert(KEY_HEADER_SUM.into(), Json::String(header_sum.into()));
        let mut header = Map::new();
        header.insert("__metadata__".into(), Json::Object(metadata));
        for e in entries {
            header.insert(
                e.name.clone(),
                json!({ "dtype": e.dtype, "shape": e.shape, "data_offsets": [e.start, e.end] }),
            );
        }
        let mut text = Json::Object(header).to_string();
        let padded = text.len().next_multiple_of(8);
        text.extend(std::iter::repeat_n(' ', padded - text.len()));
        text
    }

    #[test]
    fn the_header_is_written_as_a_json_object_of_its_values_writes_it() {
        let names = [
            "w",
            "__training__/optimizer/dense_0.weight/m",
            "Ä \"quoted\" \\ back\nline\u{1}",
            "0 digit first",
            "ZZ upper",
            "~ after",
            "",
            // Refused by a save; here only to show the same object is written.
            "__metadata__",
        ];
        let dtypes = [Dtype::F32, Dtype::BF16, Dtype::I64, Dtype::U8, Dtype::F64];
        for count in [0, 1, 3, names.len()] {
            let entries: Vec<Entry> = names[..count]
                .iter()
                .enumerate()
                .map(|(i, name)| Entry {
                    name: (*name).to_owned(),
                    dtype: dtypes[i % dtypes.len()],
                    shape: (0..i).map(|d| d + 1).collect(),
                    start: i * 24,
                    end: i * 24 + 24,
                })
                .collect();
            let sums: Vec<String> = (0..count)
                .map(|i| crc_hex(i as u32 * 0x1234_5677))
                .collect();
            let mut info = BTreeMap::new();
            info.insert(KEY_FORMAT.to_owned(), FORMAT_NAME.to_owned());
            info.insert(
                crate::store::KEY_TRAINING_STATE.to_owned(),
                r#"{"fit":{"history":[0.1,2e-9]},"note":"tab\there, ünïcode, \"q\""}"#.to_owned(),
            );
            info.insert(
                "__metadata__".to_owned(),
                "a key like the header's".to_owned(),
            );
            if count == 3 {
                // A reserved key in the caller's map is replaced, as an insert replaces it.
                info.insert(KEY_TENSOR_SUMS.to_owned(), "theirs".to_owned());
            }
            assert_eq!(
                header_text(&entries, &info, &sums, "0123abcd").expect("serializes"),
                header_text_of_values(&entries, &info, &sums, "0123abcd"),
                "{count} entries"
            );
        }
    }

    #[test]
    fn the_header_checksum_is_found_only_where_the_header_holds_it_once() {
        let key = format!("\"{KEY_HEADER_SUM}\":\"");
        let once = format!(r#"{{"__metadata__":{{"a":"b",{key}0123abcd"}}}}"#);
        let at = once.find("0123abcd").expect("written above");
        assert_eq!(header_sum_range(once.as_bytes()), Some(at..at + 8));
        assert_eq!(header_sum_range(b"{\"__metadata__\":{}}"), None);
        let twice = format!(r#"{{"__metadata__":{{{key}0123abcd","x":{key}0123abcd"}}}}"#);
        assert_eq!(header_sum_range(twice.as_bytes()), None, "two");
        // The key's text overlapping itself (its closing quote opens the second) is two.
        let overlapping = format!("{{{key}{}0123abcd\"}}", &key[1..]);
        assert_eq!(
            header_sum_range(overlapping.as_bytes()),
            None,
            "overlapping"
        );
        // Too few bytes left for the digits.
        let cut = format!("{{{key}0123");
        assert_eq!(header_sum_range(cut.as_bytes()), None, "cut");
    }
}
