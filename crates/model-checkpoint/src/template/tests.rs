//! Cases from docs/KERAS-SPEC.md §5 and §19; the differential test against CPython
//! (`tests/template_vs_cpython.rs`) covers the rest of the language.

use super::*;

fn kw() -> Vec<(&'static str, Value)> {
    vec![
        ("epoch", Value::Int(1)),
        ("big", Value::Int(1234)),
        ("val_loss", Value::Float(0.25)),
        ("x", Value::Float(10.005)),
        ("none", Value::None),
    ]
}

fn ok(template: &str) -> String {
    format(template, &kw()).unwrap_or_else(|e| panic!("{template}: {e}"))
}

fn err(template: &str) -> (String, &'static str) {
    let e = format(template, &kw()).expect_err(template);
    (e.to_string(), e.python_type())
}

#[test]
fn spec_examples() {
    assert_eq!(ok("{epoch:02d}"), "01");
    assert_eq!(ok("{epoch:03d}-{x:.2f}"), "001-10.01");
    assert_eq!(ok("{epoch:>4}"), "   1");
    assert_eq!(ok("{epoch:+d}"), "+1");
    assert_eq!(ok("{epoch:<3}|{epoch:^5}|{epoch:x}"), "1  |  1  |1");
    assert_eq!(
        ok("{val_loss:%}|{val_loss:g}|{big:,}"),
        "25.000000%|0.25|1,234"
    );
    assert_eq!(ok("{{epoch}}-{epoch}"), "{epoch}-1");
    assert_eq!(ok("{epoch:.1f}"), "1.0");
    assert_eq!(ok("{none}"), "None");
    assert_eq!(ok("{epoch!r:>3}"), "  1");
    assert_eq!(ok("{epoch.real}{epoch.imag}"), "10");
    assert_eq!(ok("{epoch:{big}}").len(), 1234);
}

#[test]
fn rounding_is_exact_with_ties_to_even() {
    let f = |x: f64, spec: &str| format_value(&Value::Float(x), spec).expect("valid");
    assert_eq!(f(0.125, ".2f"), "0.12");
    assert_eq!(f(0.375, ".2f"), "0.38");
    assert_eq!(f(2.675, ".2f"), "2.67");
    assert_eq!(f(1.005, ".2f"), "1.00");
    assert_eq!(f(2.5, ".0f"), "2");
    assert_eq!(f(3.5, ".0f"), "4");
    assert_eq!(f(0.046875, ".5f"), "0.04688");
    assert_eq!(f(0.015625, ".5f"), "0.01562");
    assert_eq!(f(0.99995, ".4f"), "1.0000");
    assert_eq!(f(1.2345e-4, ".3e"), "1.234e-04");
    assert_eq!(f(12345.0, ".3e"), "1.234e+04");
    assert_eq!(f(f64::NAN, ".2f"), "nan");
    assert_eq!(f(f64::NEG_INFINITY, ".3e"), "-inf");
    assert_eq!(f(f64::INFINITY, "g"), "inf");
}

#[test]
fn errors_carry_python_types_and_texts() {
    assert_eq!(err("w-{foo}.h5"), ("'foo'".into(), "KeyError"));
    assert_eq!(
        err("w.{epoch.h5"),
        ("expected '}' before end of string".into(), "ValueError")
    );
    assert_eq!(
        err("w}"),
        (
            "Single '}' encountered in format string".into(),
            "ValueError"
        )
    );
    assert_eq!(
        err("w{"),
        (
            "Single '{' encountered in format string".into(),
            "ValueError"
        )
    );
    assert_eq!(
        err("w{}.h5"),
        (
            "Replacement index 0 out of range for positional args tuple".into(),
            "IndexError"
        )
    );
    assert_eq!(
        err("w{1}"),
        (
            "Replacement index 1 out of range for positional args tuple".into(),
            "IndexError"
        )
    );
    assert_eq!(
        err("{epoch:s}"),
        (
            "Unknown format code 's' for object of type 'int'".into(),
            "ValueError"
        )
    );
    assert_eq!(
        err("{val_loss:d}"),
        (
            "Unknown format code 'd' for object of type 'float'".into(),
            "ValueError"
        )
    );
    assert_eq!(
        err("{none:>3}"),
        (
            "unsupported format string passed to NoneType.__format__".into(),
            "TypeError"
        )
    );
    assert_eq!(
        err("{epoch.foo}"),
        (
            "'int' object has no attribute 'foo'".into(),
            "AttributeError"
        )
    );
    assert_eq!(
        err("{epoch[0]}"),
        ("'int' object is not subscriptable".into(), "TypeError")
    );
    assert_eq!(
        err("{epoch!x}"),
        ("Unknown conversion specifier x".into(), "ValueError")
    );
    assert_eq!(err("{0:{0:{0}}}").1, "IndexError");
    assert_eq!(
        err("{epoch:{big:{big}}}"),
        ("Max string recursion exceeded".into(), "ValueError")
    );
}

#[test]
fn earlier_fields_fail_before_later_syntax_errors() {
    // Python formats left to right: the unknown key is met before the stray brace.
    assert_eq!(err("{foo}}").1, "KeyError");
    assert_eq!(err("}{foo}").1, "ValueError");
}

#[test]
fn bounded_sizes_refuse_before_allocating_but_keep_pythons_own_errors() {
    let kwargs = [("x", Value::Float(0.5)), ("n", Value::Int(3))];
    for template in [
        "{x:.2000000f}",
        "{n:99999999999}",
        "{x:1048577}",
        "{x:{n}{n}{n}{n}{n}{n}{n}}",
    ] {
        let err = format(template, &kwargs).expect_err(template);
        assert_eq!(err.python_type(), "MemoryError", "{template}: {err}");
    }
    // Python rejects these for other reasons first, and so does this engine.
    let err = format("{x:.99999999999f}", &kwargs).expect_err("precision");
    assert_eq!(err.to_string(), "precision too big");
    let err = format("{n:.5000d}", &kwargs).expect_err("int precision");
    assert_eq!(
        err.to_string(),
        "Precision not allowed in integer format specifier"
    );
    // At the limit, it works as in Python.
    assert_eq!(format("{x:.4096f}", &kwargs).expect("4096").len(), 4098);
    assert_eq!(
        format("{x:.1048576f}", &kwargs).expect("1 MiB").len(),
        1_048_578
    );
    let many = "{x:1048576}".repeat(17);
    assert_eq!(
        format(&many, &kwargs).expect_err("output").python_type(),
        "MemoryError"
    );
}

#[test]
fn precisions_past_what_rust_formats_match_python() {
    use sha2::Digest;
    // Rust's own formatting takes precisions up to 65,535; Python's, any. Past a double's
    // exact digits every digit is 0, as Python prints it (digests of CPython's output).
    let cases = [
        (0.1, "{x:.70000f}", 70002, "4af298c39dfef62e"),
        (0.1, "{x:.70000e}", 70006, "82a1da228fd815ff"),
        (0.1, "{x:.70000g}", 57, "96db2f78fe4cd6af"),
        (0.1, "{x:.70000%}", 70004, "7fdbe0cf57a1db5e"),
        (0.1, "{x:#.70000g}", 70002, "4af298c39dfef62e"),
        (1e300, "{x:.70000f}", 70302, "1ce77d049f1b7506"),
        (1e300, "{x:.2000e}", 2007, "93f8a109c35e09b0"),
    ];
    for (x, template, len, digest) in cases {
        let text = format(template, &[("x", Value::Float(x))]).expect(template);
        let hex: String = sha2::Sha256::digest(text.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!((text.len(), hex.as_str()), (len, digest), "{x} {template}");
    }
}
