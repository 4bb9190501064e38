//! Harness shared by the `template` fuzz target and
//! `crates/model-checkpoint/tests/fuzz_regressions.rs`.
//!
//! Input: `template bytes` [`0x00` `value records`]. The template is the bytes before the
//! first NUL (invalid UTF-8 replaced). Each key of [`KEYS`] then takes one record: a tag
//! byte and up to 8 payload bytes; missing records keep the key's default value.

use model_checkpoint::template::format;
use model_checkpoint::Value;

/// The keyword arguments: Keras's log names plus the names of the CPython differential test.
pub const KEYS: [&str; 9] = [
    "epoch", "batch", "loss", "val_loss", "a", "b", "n", "w", "p",
];

const DEFAULTS: [Value; 9] = [
    Value::Int(3),
    Value::Int(12),
    Value::Float(0.125),
    Value::Float(0.3456789),
    Value::Int(42),
    Value::Float(2.5),
    Value::None,
    Value::Int(8),
    Value::Int(3),
];

const FLOATS: [f64; 24] = [
    f64::NAN,
    -f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    5e-324,
    2.2250738585072014e-308,
    f64::MAX,
    f64::MIN,
    1e300,
    1e-300,
    0.5,
    2.5,
    -2.5,
    1e16,
    1e22,
    9.5,
    0.1,
    2.675,
    0.99995,
    1e-7,
    123456789.0,
    -1.5e-320,
];

const INTS: [i64; 12] = [
    i64::MIN,
    i64::MAX,
    i64::MIN + 1,
    i64::MAX - 1,
    0,
    -1,
    1 << 53,
    0x10ffff,
    0x110000,
    0xd800,
    65,
    -1_000_000_000_000,
];

fn take<const N: usize>(bytes: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(bytes.len());
    out[..n].copy_from_slice(&bytes[..n]);
    *bytes = &bytes[n..];
    out
}

/// `None` drops the key (a `KeyError` path).
fn value(bytes: &mut &[u8], default: Value) -> Option<Value> {
    let Some((&tag, rest)) = bytes.split_first() else {
        return Some(default);
    };
    *bytes = rest;
    Some(match tag % 10 {
        0 => Value::Int(i64::from_le_bytes(take(bytes))),
        1 => Value::Float(f64::from_le_bytes(take(bytes))),
        2 => Value::Float(FLOATS[usize::from(take::<1>(bytes)[0]) % FLOATS.len()]),
        3 => Value::Int(INTS[usize::from(take::<1>(bytes)[0]) % INTS.len()]),
        4 => Value::None,
        5 => return None,
        6 => Value::Int(i64::from(i8::from_le_bytes(take(bytes)))),
        7 => Value::Float(f64::from(f32::from_le_bytes(take(bytes)))),
        8 => Value::Int(i64::from(u16::from_le_bytes(take(bytes)))),
        _ => default,
    })
}

/// Splits `data` into a template and keyword arguments and formats it.
pub fn run(data: &[u8]) {
    let (template, mut values) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let template = String::from_utf8_lossy(template);
    let kwargs: Vec<(&str, Value)> = KEYS
        .iter()
        .zip(DEFAULTS)
        .filter_map(|(k, d)| value(&mut values, d).map(|v| (*k, v)))
        .collect();
    let _ = std::hint::black_box(format(&template, &kwargs));
}
