//! Datasets: the bundled digits, and CSV files with the same layout (numeric features, then
//! an integer class label, one sample a row, no header; plain or gzip-compressed).

use std::io::{BufRead, BufReader, Read};

use std::path::Path;

use crate::Error;

/// The UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak,
/// 1998; CC BY 4.0): 1,797 8×8 images with pixel values 0–16, and their digit.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// The largest CSV file [`Dataset::from_csv`] reads (before decompression).
pub const MAX_CSV_BYTES: u64 = 1 << 30;
/// The most feature values a data set may hold (1 GiB of `f32`).
pub const MAX_VALUES: usize = 1 << 28;
/// The most classes a data set may have: labels go from 0 to `MAX_CLASSES - 1`.
pub const MAX_CLASSES: usize = 1 << 16;
/// The longest line a CSV file may have.
const MAX_LINE_BYTES: usize = 1 << 24;
/// The most text a CSV file may hold once decompressed: a gzip bomb of empty lines, which
/// no value limit stops, is read no further.
pub const MAX_CSV_TEXT_BYTES: u64 = 16 << 30;

/// Samples in host memory: `len × features` values, and one class label per sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    labels: Vec<u32>,
    width: usize,
    classes: usize,
    /// Float targets (regression), `len × target_width`; empty for class labels.
    targets: Vec<f32>,
    target_width: usize,
}

impl Dataset {
    /// Samples from row-major `features` (`labels.len() × width` values) and labels.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] when the sizes disagree or there are no samples.
    pub fn new(features: Vec<f32>, labels: Vec<u32>, width: usize) -> Result<Self, Error> {
        if labels.is_empty() || width == 0 || features.len() != labels.len() * width {
            return Err(Error::options(format!(
                "{} feature values do not make {} samples of width {width}",
                features.len(),
                labels.len()
            )));
        }
        let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        if classes > MAX_CLASSES {
            return Err(Error::options(format!(
                "label {} is too large: at most {MAX_CLASSES} classes",
                classes - 1
            )));
        }
        Ok(Dataset {
            features,
            labels,
            width,
            classes,
            targets: Vec::new(),
            target_width: 0,
        })
    }

    /// Samples with float targets, for regression: row-major `features` (`n × width`) and
    /// `targets` (`n × target_width`).
    ///
    /// ```
    /// use model_checkpoint_fit::Dataset;
    ///
    /// let data = Dataset::regression(vec![0.0, 1.0, 2.0], 1, vec![0.0, 2.0, 4.0], 1)?;
    /// assert_eq!((data.len(), data.classes(), data.target_width()), (3, 0, 1));
    /// # Ok::<(), model_checkpoint_fit::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] when the sizes disagree, there are no samples, or a value is
    /// not finite.
    pub fn regression(
        features: Vec<f32>,
        width: usize,
        targets: Vec<f32>,
        target_width: usize,
    ) -> Result<Self, Error> {
        let n = targets.len().checked_div(target_width).unwrap_or(0);
        if n == 0
            || width == 0
            || targets.len() != n * target_width
            || features.len() != n.saturating_mul(width)
        {
            return Err(Error::options(format!(
                "{} feature values of width {width} and {} target values of width {target_width} do not make the same samples",
                features.len(),
                targets.len()
            )));
        }
        if !features.iter().chain(&targets).all(|v| v.is_finite()) {
            return Err(Error::options("a feature or target is not a finite number"));
        }
        Ok(Dataset {
            features,
            labels: vec![0; n],
            width,
            classes: 0,
            targets,
            target_width,
        })
    }

    /// The bundled digits, pixel values as given (0–16).
    pub fn digits() -> Self {
        Self::parse(DIGITS_CSV_GZ, Path::new("digits.csv.gz"))
            .expect("the bundled digits data set parses (a test checks it)")
    }

    /// Reads a CSV file: plain, or gzip-compressed (recognised by its magic bytes).
    ///
    /// # Errors
    ///
    /// [`Error::DataIo`] if the file cannot be read, [`Error::MalformedRow`] naming the line
    /// of the first bad row.
    pub fn from_csv(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let io = |source| Error::DataIo {
            path: path.to_path_buf(),
            source,
        };
        let file = model_checkpoint::store::open_regular(path).map_err(|e| match e {
            model_checkpoint::Error::Io { source, .. } => io(source),
            model_checkpoint::Error::FolderNotFile { .. } => io(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "it is a folder",
            )),
            other => Error::Checkpoint(other),
        })?;
        // Read at most one byte past the limit, so that a huge file fails without being read.
        let mut bytes = Vec::new();
        file.take(MAX_CSV_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_CSV_BYTES {
            return Err(Error::options(format!(
                "{} is larger than {} MiB, the most a CSV data set may hold",
                path.display(),
                MAX_CSV_BYTES >> 20
            )));
        }
        Self::parse(&bytes, path)
    }

    /// Parses CSV text (plain, or gzip-compressed) as [`Dataset::from_csv`] reads a file;
    /// `name` stands for the file in error messages.
    ///
    /// # Errors
    ///
    /// [`Error::MalformedRow`] naming the line of the first bad row, and
    /// [`Error::InvalidOptions`] when the data exceed [`MAX_VALUES`] values or
    /// [`MAX_CLASSES`] classes.
    pub fn from_csv_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<Self, Error> {
        Self::parse(bytes, name.as_ref())
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Self, Error> {
        Self::parse_within(bytes, path, MAX_CSV_TEXT_BYTES)
    }

    /// [`Dataset::parse`], reading at most `max_text` bytes of text.
    fn parse_within(bytes: &[u8], path: &Path, max_text: u64) -> Result<Self, Error> {
        // A gzip bomb inflates only as far as the value limit lets rows through.
        let reader: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(bytes))
        } else {
            Box::new(bytes)
        };
        let mut reader = BufReader::new(reader);
        let mut features = Vec::new();
        let mut labels = Vec::new();
        let mut width = None;
        let mut raw = Vec::new();
        let mut text_bytes = 0u64;
        for line_no in 1usize.. {
            let bad = |reason: String| Error::MalformedRow {
                path: path.to_path_buf(),
                line: line_no,
                reason,
            };
            raw.clear();
            // One line at a time, never more than the limit, so that a file without line
            // breaks (or a gzip bomb of one) cannot exhaust memory.
            let read = (&mut reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut raw)
                .map_err(|e| bad(format!("unreadable: {e}")))?;
            if read == 0 {
                break;
            }
            text_bytes += read as u64;
            if text_bytes > max_text {
                return Err(Error::options(format!(
                    "{} holds more than {max_text} bytes of text once decompressed, the most \
                     a CSV data set may",
                    path.display()
                )));
            }
            if raw.len() > MAX_LINE_BYTES {
                return Err(bad(format!("longer than {MAX_LINE_BYTES} bytes")));
            }
            let line = std::str::from_utf8(&raw)
                .map_err(|e| bad(format!("unreadable: not UTF-8 text ({e})")))?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() < 2 {
                return Err(bad(format!(
                    "expected features and a label, found {} value(s)",
                    fields.len()
                )));
            }
            let w = fields.len() - 1;
            match width {
                None => width = Some(w),
                Some(expected) if expected != w => {
                    return Err(bad(format!(
                        "expected {} values like the first row, found {}",
                        expected + 1,
                        fields.len()
                    )))
                }
                Some(_) => {}
            }
            for f in &fields[..w] {
                let v: f32 = f
                    .parse()
                    .map_err(|_| bad(format!("{f:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(bad(format!("{f:?} is not a finite number")));
                }
                features.push(v);
            }
            let label = fields[w];
            let label: u32 = label
                .parse()
                .map_err(|_| bad(format!("label {label:?} is not a non-negative integer")))?;
            if label as usize >= MAX_CLASSES {
                return Err(bad(format!(
                    "label {label} is too large: at most {MAX_CLASSES} classes (labels 0 to {})",
                    MAX_CLASSES - 1
                )));
            }
            if features.len() >= MAX_VALUES {
                return Err(bad(format!(
                    "the data set holds more than {MAX_VALUES} values, the most it may hold"
                )));
            }
            labels.push(label);
        }
        let Some(width) = width else {
            return Err(Error::MalformedRow {
                path: path.to_path_buf(),
                line: 0,
                reason: "no samples".into(),
            });
        };
        Self::new(features, labels, width)
    }

    /// Divides every feature by the largest absolute value, so that features lie in
    /// [-1, 1] (pixel values 0–16 become 0–1).
    pub fn scaled(mut self) -> Self {
        let max = self.features.iter().fold(0f32, |m, v| m.max(v.abs()));
        if max > 0.0 {
            self.features.iter_mut().for_each(|v| *v /= max);
        }
        self
    }

    /// The samples in an order drawn from `seed` (for a held-out split of a file whose rows
    /// are ordered, as the bundled digits are).
    pub fn shuffled(&self, seed: u64) -> Dataset {
        let mut order: Vec<usize> = (0..self.len()).collect();
        crate::TrainRng::new(seed).shuffle(&mut order);
        let mut features = Vec::with_capacity(self.features.len());
        for &i in &order {
            features.extend_from_slice(&self.features[i * self.width..(i + 1) * self.width]);
        }
        let tw = self.target_width;
        let mut targets = Vec::with_capacity(self.targets.len());
        for &i in &order {
            targets.extend_from_slice(self.targets.get(i * tw..(i + 1) * tw).unwrap_or(&[]));
        }
        Dataset {
            features,
            labels: order.iter().map(|&i| self.labels[i]).collect(),
            width: self.width,
            classes: self.classes,
            targets,
            target_width: tw,
        }
    }

    /// Splits off the last `fraction` of samples for validation, as Keras's
    /// `validation_split` does (taken before any shuffling).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] when `fraction` is not in (0, 1) or leaves either side empty.
    pub fn split_last(&self, fraction: f64) -> Result<(Dataset, Dataset), Error> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(Error::options(format!(
                "validation split must be between 0 and 1 (exclusive), got {fraction}"
            )));
        }
        // Keras: split_at = int(len * (1 - validation_split)).
        let split = (self.len() as f64 * (1.0 - fraction)) as usize;
        if split == 0 || split == self.len() {
            return Err(Error::options(format!(
                "validation split {fraction} of {} samples leaves an empty side",
                self.len()
            )));
        }
        Ok((self.subset(0..split), self.subset(split..self.len())))
    }

    fn subset(&self, range: std::ops::Range<usize>) -> Dataset {
        let tw = self.target_width;
        Dataset {
            features: self.features[range.start * self.width..range.end * self.width].to_vec(),
            targets: self
                .targets
                .get(range.start * tw..range.end * tw)
                .unwrap_or(&[])
                .to_vec(),
            labels: self.labels[range].to_vec(),
            width: self.width,
            classes: self.classes,
            target_width: tw,
        }
    }

    /// A checksum of the samples (features' bits and labels, in order), to tell whether two
    /// data sets are the same.
    pub fn fingerprint(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for v in &self.features {
            h.update(&v.to_bits().to_le_bytes());
        }
        for l in &self.labels {
            h.update(&l.to_le_bytes());
        }
        for t in &self.targets {
            h.update(&t.to_bits().to_le_bytes());
        }
        h.update(&(self.width as u64).to_le_bytes());
        h.finalize()
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples (never, for a constructed dataset).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per sample.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of classes (largest label + 1); 0 for float targets.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Float targets per sample; 0 for class labels.
    pub fn target_width(&self) -> usize {
        self.target_width
    }

    /// The labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The samples at `indices`, copied out for a framework to turn into tensors: features
    /// (`n × width`, row-major) and their labels or float targets.
    ///
    /// # Panics
    ///
    /// Never for indices below [`Dataset::len`], which is all `fit` passes.
    pub fn batch(&self, indices: &[usize]) -> Batch {
        let mut features = Vec::with_capacity(indices.len() * self.width);
        for &i in indices {
            features.extend_from_slice(&self.features[i * self.width..(i + 1) * self.width]);
        }
        let targets = if self.target_width > 0 {
            let width = self.target_width;
            let mut values = Vec::with_capacity(indices.len() * width);
            for &i in indices {
                values.extend_from_slice(&self.targets[i * width..(i + 1) * width]);
            }
            Targets::Values { values, width }
        } else {
            Targets::Labels(indices.iter().map(|&i| self.labels[i]).collect())
        };
        Batch {
            features,
            rows: indices.len(),
            width: self.width,
            targets,
        }
    }
}

/// Samples copied out of a [`Dataset`], ready to become a framework's tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `rows × width` feature values, row-major.
    pub features: Vec<f32>,
    /// Samples in the batch.
    pub rows: usize,
    /// Features per sample.
    pub width: usize,
    /// What the model should predict for them.
    pub targets: Targets,
}

/// The targets of a [`Batch`].
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// One class label per sample.
    Labels(Vec<u32>),
    /// `rows × width` float targets (regression), row-major.
    Values {
        /// The values.
        values: Vec<f32>,
        /// Targets per sample.
        width: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_digits_parse() {
        let d = Dataset::digits();
        assert_eq!((d.len(), d.width(), d.classes()), (1797, 64, 10));
    }

    #[test]
    fn malformed_rows_name_their_line() {
        let err = Dataset::parse(b"1,2,3\n4,5\n", Path::new("x.csv")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.csv: line 2: expected 3 values like the first row, found 2"
        );
        let err = Dataset::parse(b"1,2,3\n4,x,1\n", Path::new("x.csv")).unwrap_err();
        assert_eq!(err.to_string(), "x.csv: line 2: \"x\" is not a number");
        let err = Dataset::parse(b"1,2,-1\n", Path::new("x.csv")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.csv: line 1: label \"-1\" is not a non-negative integer"
        );
    }

    #[test]
    fn split_takes_the_last_samples() {
        let d =
            Dataset::new((0..10).map(|v| v as f32).collect(), (0..10).collect(), 1).expect("data");
        let (train, val) = d.split_last(0.2).expect("split");
        assert_eq!(train.labels(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(val.labels(), &[8, 9]);
    }

    #[test]
    fn a_gzip_bomb_of_empty_lines_is_read_no_further_than_the_text_limit() {
        use std::io::Write;
        // 24 MiB of line breaks (what the limit stands for, 16 GiB, in miniature), and a
        // row: no value limit stops empty lines, the text limit does.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let lines = vec![b'\n'; 1 << 20];
        for _ in 0..24 {
            gz.write_all(&lines).expect("compress");
        }
        gz.write_all(b"1,2,0\n").expect("compress");
        let bomb = gz.finish().expect("compress");
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let err = Dataset::parse_within(&bomb, Path::new("bomb.csv.gz"), 8 << 20)
            .expect_err("past the limit");
        assert!(
            err.to_string()
                .contains("holds more than 8388608 bytes of text once decompressed"),
            "{err}"
        );
        let data = Dataset::parse_within(&bomb, Path::new("bomb.csv.gz"), 32 << 20)
            .expect("within the limit");
        assert_eq!(data.len(), 1);
    }
}
