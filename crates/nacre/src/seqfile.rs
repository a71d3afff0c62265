//! The `nacre sequence` input: steps as a JSON array or as a stream of JSON
//! objects (JSON lines), compiled to one guarded batch.
//!
//! Every key, value and prefix field may instead be given base64-encoded
//! with a `_b64` suffix (`key_b64`, `value_b64`, `keys_b64`, ...), for
//! binary data.

use base64::Engine;
use nacre_client::{Batch, Bytes, Sequence};
use serde_json::{Map, Value};

/// Parses the steps and compiles them; errors name the step (from 1).
pub fn parse_sequence(text: &str) -> Result<Batch, String> {
    let mut values = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        values.push(v.map_err(|e| format!("sequence is not valid JSON: {e}"))?);
    }
    // No steps is a valid sequence, as in Arakoon: it goes through the
    // log like `nop`.
    let steps = match values.as_slice() {
        [Value::Array(a)] => a.clone(),
        _ => values,
    };
    let mut seq = Sequence::new();
    for (i, step) in steps.iter().enumerate() {
        compile_step(&mut seq, step).map_err(|e| format!("step {}: {e}", i + 1))?;
    }
    Ok(seq.into_batch())
}

fn compile_step(seq: &mut Sequence, step: &Value) -> Result<(), String> {
    let obj = step.as_object().ok_or("a step must be a JSON object")?;
    let op = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or("missing \"op\" (a string)")?;
    let allowed: &[&str] = match op {
        "set" => &["key", "value"],
        "delete" | "remove" | "assert_exists" => &["key"],
        "test_and_set" => &["key", "expected", "wanted"],
        "assert" => &["key", "value"],
        "assert_version" => &["key", "version"],
        "delete_prefix" => &["prefix"],
        "assert_range" => &["prefix", "keys"],
        other => return Err(format!("unknown op {other:?}")),
    };
    // Typos must not silently drop an assertion.
    for name in obj.keys() {
        let base = name.strip_suffix("_b64").unwrap_or(name);
        if name != "op" && !allowed.contains(&base) {
            return Err(format!("{op}: unknown field {name:?}"));
        }
    }
    match op {
        "set" => {
            seq.set(req(obj, "key")?, req(obj, "value")?);
        }
        "delete" => {
            seq.delete(req(obj, "key")?);
        }
        "remove" => {
            seq.remove(req(obj, "key")?);
        }
        "assert_exists" => {
            seq.assert_exists(req(obj, "key")?);
        }
        "test_and_set" => {
            seq.test_and_set(
                req(obj, "key")?,
                nullable(obj, "expected")?,
                nullable(obj, "wanted")?,
            );
        }
        "assert" => {
            seq.assert(req(obj, "key")?, nullable(obj, "value")?);
        }
        "assert_version" => {
            let version = obj
                .get("version")
                .and_then(Value::as_u64)
                .ok_or("assert_version: \"version\" must be a non-negative integer")?;
            seq.assert_version(req(obj, "key")?, version);
        }
        "delete_prefix" => {
            seq.delete_prefix(req(obj, "prefix")?);
        }
        "assert_range" => {
            seq.assert_range(req(obj, "prefix")?, key_list(obj)?);
        }
        _ => unreachable!("ops are checked above"),
    }
    Ok(())
}

/// A field given as text (`name`) or base64 (`name_b64`); `Ok(None)` when
/// neither is there, `Some(None)` when it is JSON null.
fn field(obj: &Map<String, Value>, name: &str) -> Result<Option<Option<Bytes>>, String> {
    let b64 = format!("{name}_b64");
    match (obj.get(name), obj.get(&b64)) {
        (Some(_), Some(_)) => Err(format!("give {name:?} or {b64:?}, not both")),
        (None, None) => Ok(None),
        (Some(v), None) => text_value(v, name).map(Some),
        (None, Some(v)) => b64_value(v, &b64).map(Some),
    }
}

fn text_value(v: &Value, name: &str) -> Result<Option<Bytes>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(Bytes::from(s.clone()))),
        _ => Err(format!("{name:?} must be a string or null")),
    }
}

fn b64_value(v: &Value, name: &str) -> Result<Option<Bytes>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| format!("{name:?} is not valid base64: {e}")),
        _ => Err(format!("{name:?} must be a base64 string or null")),
    }
}

fn req(obj: &Map<String, Value>, name: &str) -> Result<Bytes, String> {
    match field(obj, name)? {
        Some(Some(b)) => Ok(b),
        Some(None) => Err(format!("{name:?} must not be null")),
        None => Err(format!("missing {name:?} (or {name}_b64)")),
    }
}

/// A field that must be present; null means "absent key".
fn nullable(obj: &Map<String, Value>, name: &str) -> Result<Option<Bytes>, String> {
    field(obj, name)?.ok_or_else(|| format!("missing {name:?} (or {name}_b64; null means absent)"))
}

fn key_list(obj: &Map<String, Value>) -> Result<Vec<Bytes>, String> {
    let (list, b64) = match (obj.get("keys"), obj.get("keys_b64")) {
        (Some(_), Some(_)) => return Err("give \"keys\" or \"keys_b64\", not both".into()),
        (None, None) => return Err("missing \"keys\" (or keys_b64)".into()),
        (Some(v), None) => (v, false),
        (None, Some(v)) => (v, true),
    };
    let items = list
        .as_array()
        .ok_or("\"keys\" must be an array of strings")?;
    items
        .iter()
        .map(|v| {
            let k = if b64 {
                b64_value(v, "keys_b64")?
            } else {
                text_value(v, "keys")?
            };
            k.ok_or_else(|| "keys must not be null".to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_client::{Guard, Op};

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn array_with_every_op() {
        let text = r#"[
            {"op":"set","key":"a","value":"1"},
            {"op":"delete","key":"a"},
            {"op":"test_and_set","key":"t","expected":null,"wanted":"x"},
            {"op":"test_and_set","key":"t","expected":"x","wanted":null},
            {"op":"assert","key":"a","value":null},
            {"op":"assert","key":"b","value":"2"},
            {"op":"assert_exists","key":"b"},
            {"op":"assert_version","key":"b","version":3},
            {"op":"delete_prefix","prefix":"p/"},
            {"op":"assert_range","prefix":"q/","keys":["q/1","q/2"]}
        ]"#;
        let batch = parse_sequence(text).unwrap();
        assert!(batch.guards.is_empty());
        assert_eq!(
            batch.ops,
            vec![
                Op::Set(b("a"), b("1")),
                Op::Delete(b("a")),
                Op::TestAndSet {
                    key: b("t"),
                    expected: None,
                    wanted: Some(b("x")),
                },
                Op::TestAndSet {
                    key: b("t"),
                    expected: Some(b("x")),
                    wanted: None,
                },
                Op::Check(Guard::Absent(b("a"))),
                Op::Check(Guard::ValueEquals(b("b"), b("2"))),
                Op::Check(Guard::Present(b("b"))),
                Op::Check(Guard::VersionEquals(b("b"), 3)),
                Op::DeletePrefix(b("p/")),
                Op::Check(Guard::PrefixKeysEqual {
                    prefix: b("q/"),
                    keys: vec![b("q/1"), b("q/2")]
                }),
            ]
        );
    }

    #[test]
    fn json_lines_and_base64_fields() {
        let text = "{\"op\":\"set\",\"key_b64\":\"AP8=\",\"value_b64\":\"aGk=\"}\n\n\
                    {\"op\":\"assert_range\",\"prefix_b64\":\"AA==\",\"keys_b64\":[\"AP8=\"]}\n";
        let batch = parse_sequence(text).unwrap();
        assert_eq!(
            batch.ops,
            vec![
                Op::Set(Bytes::from_static(&[0, 255]), b("hi")),
                Op::Check(Guard::PrefixKeysEqual {
                    prefix: Bytes::from_static(&[0]),
                    keys: vec![Bytes::from_static(&[0, 255])]
                }),
            ]
        );
    }

    #[test]
    fn an_empty_sequence_is_accepted() {
        for text in ["", "[]", " \n"] {
            assert_eq!(parse_sequence(text).unwrap(), Batch::default(), "{text:?}");
        }
    }

    #[test]
    fn bad_input_is_refused_with_the_step_number() {
        let cases = [
            (
                "[{\"op\":\"set\",\"key\":\"a\"}]",
                "step 1: missing \"value\"",
            ),
            (
                "{\"op\":\"set\",\"key\":\"a\",\"value\":\"1\"}\n{\"op\":\"frob\"}",
                "step 2: unknown op \"frob\"",
            ),
            (
                "[{\"op\":\"set\",\"key\":\"a\",\"value\":\"1\",\"vlaue\":\"2\"}]",
                "unknown field \"vlaue\"",
            ),
            (
                "[{\"op\":\"set\",\"key\":\"a\",\"key_b64\":\"YQ==\",\"value\":\"1\"}]",
                "not both",
            ),
            (
                "[{\"op\":\"set\",\"key_b64\":\"!!\",\"value\":\"1\"}]",
                "not valid base64",
            ),
            (
                "[{\"op\":\"test_and_set\",\"key\":\"a\",\"wanted\":\"1\"}]",
                "missing \"expected\"",
            ),
            (
                "[{\"op\":\"assert_version\",\"key\":\"a\",\"version\":-1}]",
                "non-negative integer",
            ),
            (
                "[{\"op\":\"set\",\"key\":1,\"value\":\"1\"}]",
                "must be a string",
            ),
            ("[{\"op\":\"delete\",\"key\":null}]", "must not be null"),
            ("[{\"key\":\"a\"}]", "missing \"op\""),
            ("[1]", "JSON object"),
            ("[{\"op\":\"set\",", "not valid JSON"),
        ];
        for (text, want) in cases {
            let err = parse_sequence(text).unwrap_err();
            assert!(
                err.contains(want),
                "{text:?}: {err:?} does not contain {want:?}"
            );
        }
    }
}
