//! The sandbox on an in-memory view: API, recorder, escapes, budgets.

use std::collections::BTreeMap;

use bytes::Bytes;
use nacre_proto::{Batch, Guard, KeyEntry, Op, Revision};
use nacre_script::{
    check_name, check_syntax, Budgets, KvView, NameError, Sandbox, ScriptError, ViewError,
};

#[derive(Default)]
struct Mem(BTreeMap<Bytes, (Bytes, u64)>);

impl Mem {
    fn put(&mut self, k: &str, v: &[u8]) {
        let ver = self.0.get(k.as_bytes()).map_or(0, |e| e.1) + 1;
        self.0.insert(b(k), (Bytes::copy_from_slice(v), ver));
    }

    /// Applies a batch the way the state machine does (guards first).
    fn apply(&mut self, batch: &Batch) -> bool {
        for g in &batch.guards {
            let ok = match g {
                Guard::VersionEquals(k, v) => self.0.get(k).map_or(0, |e| e.1) == *v,
                Guard::PrefixKeysEqual { prefix, keys } => {
                    let have: Vec<_> = self
                        .0
                        .keys()
                        .filter(|k| k.starts_with(prefix))
                        .cloned()
                        .collect();
                    have == *keys
                }
                g => panic!("unexpected guard {g:?}"),
            };
            if !ok {
                return false;
            }
        }
        for op in &batch.ops {
            match op {
                Op::Set(k, v) => {
                    let ver = self.0.get(k).map_or(0, |e| e.1) + 1;
                    self.0.insert(k.clone(), (v.clone(), ver));
                }
                Op::Remove(k) => {
                    self.0.remove(k);
                }
                Op::DeletePrefix(p) => self.0.retain(|k, _| !k.starts_with(p)),
                o => panic!("unexpected op {o:?}"),
            }
        }
        true
    }
}

fn entry(k: &Bytes, v: &(Bytes, u64)) -> KeyEntry {
    KeyEntry {
        key: k.clone(),
        value: v.0.clone(),
        rev: Revision {
            create_rev: 1,
            mod_rev: 1,
            version: v.1,
        },
    }
}

impl KvView for Mem {
    fn get(&self, key: &[u8]) -> Result<Option<KeyEntry>, ViewError> {
        Ok(self.0.get_key_value(key).map(|(k, v)| entry(k, v)))
    }

    fn range(
        &self,
        first: Option<&[u8]>,
        last: Option<&[u8]>,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ViewError> {
        Ok(self
            .0
            .iter()
            .filter(|(k, _)| first.is_none_or(|f| &k[..] >= f) && last.is_none_or(|l| &k[..] < l))
            .take(max as usize)
            .map(|(k, v)| entry(k, v))
            .collect())
    }

    fn prefix(&self, prefix: &[u8], max: u32) -> Result<Vec<Bytes>, ViewError> {
        Ok(self
            .0
            .keys()
            .filter(|k| k.starts_with(prefix))
            .take(max as usize)
            .cloned()
            .collect())
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn sandbox(src: &str) -> Sandbox {
    Sandbox::new("t", src.as_bytes(), Budgets::default()).unwrap()
}

fn call(sb: &Sandbox, view: &Mem, f: &str, args: &[&str]) -> Result<Option<String>, ScriptError> {
    let args: Vec<Bytes> = args.iter().map(|a| b(a)).collect();
    sb.call(view, f, &args)
        .map(|o| o.value.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

#[test]
fn reads_become_guards_and_writes_ops() {
    let mut m = Mem::default();
    m.put("a", b"1");
    let sb = sandbox(
        r#"
        function f(k)
          local a = kv.get("a")
          local missing = kv.exists("nope")
          kv.set(k, a .. "!")
          kv.set("b", "x")
          local b = kv.get("b")  -- own write: no guard
          kv.delete("c")
          return b
        end
        "#,
    );
    let out = sb.call(&m, "f", &[b("k")]).unwrap();
    assert_eq!(out.value, Some(b("x")));
    assert_eq!(
        out.batch.guards,
        vec![
            Guard::VersionEquals(b("a"), 1),
            Guard::VersionEquals(b("nope"), 0)
        ]
    );
    assert_eq!(
        out.batch.ops,
        vec![
            Op::Set(b("k"), b("1!")),
            Op::Set(b("b"), b("x")),
            Op::Remove(b("c"))
        ]
    );
    assert!(out.wrote());
}

#[test]
fn read_only_functions_record_no_ops() {
    let mut m = Mem::default();
    m.put("p/1", b"x");
    m.put("p/2", b"y");
    let sb = sandbox(
        r#"
        function count() local n = 0 for _, e in ipairs(kv.range("p/", "p0")) do n = n + 1 end return n end
        function keys() return table.concat(kv.prefix("p/"), ",") end
        function entry() local e = kv.get_entry("p/1") return e.version .. e.value end
        "#,
    );
    assert_eq!(call(&sb, &m, "count", &[]).unwrap().as_deref(), Some("2"));
    assert_eq!(
        call(&sb, &m, "keys", &[]).unwrap().as_deref(),
        Some("p/1,p/2")
    );
    assert_eq!(call(&sb, &m, "entry", &[]).unwrap().as_deref(), Some("1x"));
    assert!(!sb.call(&m, "count", &[]).unwrap().wrote());
}

#[test]
fn prefix_is_guarded_and_sees_own_writes_but_range_refuses_writes() {
    let mut m = Mem::default();
    m.put("p/1", b"x");
    let sb = sandbox(
        r#"
        function add() kv.set("p/2", "y") kv.delete("p/1") return table.concat(kv.prefix("p/"), ",") end
        function bad() kv.range("p/", nil) kv.set("z", "1") end
        function truncated() kv.prefix("p/", 0) kv.set("z", "1") end
        "#,
    );
    let out = sb.call(&m, "add", &[]).unwrap();
    assert_eq!(out.value, Some(b("p/2")));
    assert_eq!(
        out.batch.guards,
        vec![Guard::PrefixKeysEqual {
            prefix: b("p/"),
            keys: vec![b("p/1")]
        }]
    );
    for f in ["bad", "truncated"] {
        match call(&sb, &m, f, &[]) {
            Err(ScriptError::Runtime(msg)) => assert!(msg.contains("cannot be guarded"), "{msg}"),
            r => panic!("{f}: {r:?}"),
        }
    }
}

#[test]
fn le_helpers_round_trip() {
    let m = Mem::default();
    let sb = sandbox(
        r#"
        function f()
          assert(#le.u64(1) == 8 and #le.u32(1) == 4)
          assert(le.to_u64(le.u64(-5)) == -5)
          assert(le.to_u32(le.u32(4000000000)) == 4000000000)
          assert(le.u64(258) == "\2\1\0\0\0\0\0\0")
          return le.to_u64(le.u64(math.maxinteger))
        end
        function short() local v = le.to_u64("abc") return v end
        "#,
    );
    assert_eq!(call(&sb, &m, "f", &[]).unwrap(), Some(i64::MAX.to_string()));
    match call(&sb, &m, "short", &[]) {
        Err(ScriptError::Runtime(msg)) => assert!(msg.starts_with("t:9:"), "{msg}"),
        r => panic!("{r:?}"),
    }
}

#[test]
fn sandbox_escapes_are_refused() {
    let m = Mem::default();
    let sb = sandbox(
        r#"
        function io_() return io.open("/etc/passwd") end
        function os_() return os.execute("true") end
        function require_() return require("os") end
        function debug_() return debug.getregistry() end
        function dump() return string.dump(function() end) end
        function dump_via_meta() return ("").dump(function() end) end
        function binary() return load("\27Lua") end
        function loadfile_() return loadfile("/etc/passwd") end
        function dofile_() return dofile("/etc/passwd") end
        function gmeta() return getmetatable("") end
        function lib_write() string.upper = function() return "pwned" end end
        function rawset_() rawset(string, "upper", 1) end
        function setmeta_lib() setmetatable(string, {}) end
        function gc() setmetatable({}, {__gc = function() end}) end
        function collect() collectgarbage() end
        function coroutine_() return coroutine.create(function() end) end
        function g_() return _G.os end
        function text_load() return load("return 1 + 1")() end
        "#,
    );
    let refused = [
        "io_",
        "os_",
        "require_",
        "debug_",
        "dump",
        "dump_via_meta",
        "loadfile_",
        "dofile_",
        "lib_write",
        "rawset_",
        "setmeta_lib",
        "gc",
        "collect",
        "coroutine_",
        "g_",
    ];
    for f in refused {
        match call(&sb, &m, f, &[]) {
            Err(ScriptError::Runtime(_)) => {}
            r => panic!("{f} was not refused: {r:?}"),
        }
    }
    // load answers nil plus a message for a binary chunk: it must not run.
    match call(&sb, &m, "binary", &[]) {
        Err(ScriptError::Runtime(msg)) => assert!(msg.contains("binary chunks"), "{msg}"),
        r => panic!("binary chunk: {r:?}"),
    }
    assert_eq!(
        call(&sb, &m, "gmeta", &[]).unwrap().as_deref(),
        Some("false")
    );
    // Text chunks load, in a sandboxed environment.
    assert_eq!(
        call(&sb, &m, "text_load", &[]).unwrap().as_deref(),
        Some("2")
    );
    // The libraries are unchanged after the attempts above.
    let sb2 = sandbox(r#"function f() return string.upper("a") end"#);
    assert_eq!(call(&sb2, &m, "f", &[]).unwrap().as_deref(), Some("A"));
    assert_eq!(
        check_syntax("t", b"\x1bLua"),
        Err(ScriptError::Syntax("binary chunks are refused".into()))
    );
}

#[test]
fn no_state_survives_between_calls() {
    let m = Mem::default();
    let sb = sandbox(
        r#"
        local n = 0
        function bump() n = n + 1; counter = (counter or 0) + 1; return n * 10 + counter end
        "#,
    );
    for _ in 0..3 {
        assert_eq!(call(&sb, &m, "bump", &[]).unwrap().as_deref(), Some("11"));
    }
}

#[test]
fn instruction_budget_stops_runaway_loops_even_under_pcall() {
    let m = Mem::default();
    let budgets = Budgets {
        instructions_max: 100_000,
        ..Budgets::default()
    };
    let sb = Sandbox::new(
        "t",
        br#"
        function spin() while true do end end
        function sneaky() while true do pcall(function() while true do end end) end end
        function ok() local s = 0 for i = 1, 1000 do s = s + i end return s end
        "#,
        budgets,
    )
    .unwrap();
    for f in ["spin", "sneaky"] {
        match call(&sb, &m, f, &[]) {
            Err(ScriptError::Budget(msg)) => assert!(msg.contains("instruction"), "{msg}"),
            r => panic!("{f}: {r:?}"),
        }
    }
    // The same sandbox still serves a well-behaved call.
    assert_eq!(call(&sb, &m, "ok", &[]).unwrap().as_deref(), Some("500500"));
}

#[test]
fn memory_budget_stops_hogs() {
    let m = Mem::default();
    let budgets = Budgets {
        memory_max_bytes: 1 << 20,
        ..Budgets::default()
    };
    let sb = Sandbox::new(
        "t",
        br#"
        function hog() local t = {} for i = 1, 1e7 do t[i] = i end end
        function strings() local s = "x" while true do s = s .. s end end
        function caught() local ok = pcall(function() local s = "x" while true do s = s .. s end end) return "survived" end
        function small() return #string.rep("x", 1000) end
        "#,
        budgets,
    )
    .unwrap();
    for f in ["hog", "strings", "caught"] {
        match call(&sb, &m, f, &[]) {
            Err(ScriptError::Budget(msg)) => assert!(msg.contains("memory"), "{f}: {msg}"),
            r => panic!("{f}: {r:?}"),
        }
    }
    assert_eq!(
        call(&sb, &m, "small", &[]).unwrap().as_deref(),
        Some("1000")
    );
}

#[test]
fn errors_carry_script_message_and_line() {
    let m = Mem::default();
    let sb = sandbox(
        "function f()\n  local x = nil\n  return x.field\nend\nfunction g()\n  error(\"boom\")\nend\nfunction h(v)\n  nacre.check(v == \"ok\", \"v must be ok\")\n  return v\nend\nfunction t() return {} end\nfunction k() kv.get(42) end\n",
    );
    match call(&sb, &m, "f", &[]) {
        Err(ScriptError::Runtime(msg)) => assert!(msg.starts_with("t:3:"), "{msg}"),
        r => panic!("{r:?}"),
    }
    assert_eq!(
        call(&sb, &m, "g", &[]),
        Err(ScriptError::Runtime("t:6: boom".into()))
    );
    assert_eq!(
        call(&sb, &m, "h", &["no"]),
        Err(ScriptError::Aborted("t:9: v must be ok".into()))
    );
    assert_eq!(call(&sb, &m, "h", &["ok"]).unwrap().as_deref(), Some("ok"));
    assert!(matches!(
        call(&sb, &m, "t", &[]),
        Err(ScriptError::BadReturn(_))
    ));
    match call(&sb, &m, "k", &[]) {
        Err(ScriptError::Runtime(msg)) => {
            assert!(
                msg.starts_with("t:13:") && msg.contains("must be a string"),
                "{msg}"
            )
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        call(&sb, &m, "missing", &[]),
        Err(ScriptError::FunctionNotFound("missing".into()))
    );
    match check_syntax("t", b"function f(\n  return 1\nend") {
        Err(ScriptError::Syntax(msg)) => assert!(msg.contains("t:2:"), "{msg}"),
        r => panic!("{r:?}"),
    }
}

fn example(name: &str) -> Sandbox {
    let path = format!(
        "{}/../../examples/scripts/{name}.lua",
        env!("CARGO_MANIFEST_DIR")
    );
    let src = std::fs::read(&path).unwrap();
    Sandbox::new(name, &src, Budgets::default()).unwrap()
}

/// Runs a call and applies its batch, as the leader would.
fn run(sb: &Sandbox, m: &mut Mem, f: &str, args: &[&[u8]]) -> Result<Option<Bytes>, ScriptError> {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    let out = sb.call(m, f, &args)?;
    assert!(m.apply(&out.batch), "guards hold with no concurrent writer");
    Ok(out.value)
}

#[test]
fn example_arith64() {
    let sb = example("arith64");
    let mut m = Mem::default();
    assert_eq!(run(&sb, &mut m, "incr", &[b"c"]).unwrap(), Some(b("1")));
    assert_eq!(
        run(&sb, &mut m, "incr", &[b"c", b"41"]).unwrap(),
        Some(b("42"))
    );
    assert_eq!(m.0[&b("c")].0, Bytes::copy_from_slice(&42i64.to_le_bytes()));
    assert_eq!(run(&sb, &mut m, "get", &[b"c"]).unwrap(), Some(b("42")));
    assert_eq!(run(&sb, &mut m, "get", &[b"none"]).unwrap(), Some(b("0")));
    // A stale read loses at apply: the guard catches the concurrent write.
    let out = sb.call(&m, "incr", &[b("c")]).unwrap();
    m.put("c", &7i64.to_le_bytes());
    assert!(!m.apply(&out.batch));
    assert!(matches!(
        run(&sb, &mut m, "incr", &[b"c", b"x"]),
        Err(ScriptError::Aborted(_))
    ));
}

#[test]
fn example_update_max() {
    let sb = example("update_max");
    let mut m = Mem::default();
    assert_eq!(
        run(&sb, &mut m, "update_max", &[b"m", b"5"]).unwrap(),
        Some(b("5"))
    );
    assert_eq!(
        run(&sb, &mut m, "update_max", &[b"m", b"3"]).unwrap(),
        Some(b("5"))
    );
    let out = sb.call(&m, "update_max", &[b("m"), b("4")]).unwrap();
    assert!(!out.wrote(), "a smaller value writes nothing");
    assert_eq!(
        run(&sb, &mut m, "update_max", &[b"m", b"9"]).unwrap(),
        Some(b("9"))
    );
    assert_eq!(m.0[&b("m")].0, Bytes::copy_from_slice(&9i64.to_le_bytes()));
}

#[test]
fn example_shared_log() {
    let sb = example("shared_log");
    let mut m = Mem::default();
    let e = |n: u64| n.to_string().into_bytes();
    assert_eq!(
        run(&sb, &mut m, "write", &[b"L", &e(0), &e(0), b"a"]).unwrap(),
        None
    );
    assert_eq!(
        run(&sb, &mut m, "write", &[b"L", &e(0), &e(5), b"b"]).unwrap(),
        None
    );
    // Written once only.
    assert!(matches!(
        run(&sb, &mut m, "write", &[b"L", &e(0), &e(5), b"c"]),
        Err(ScriptError::Aborted(msg)) if msg.contains("already written")
    ));
    assert_eq!(
        run(&sb, &mut m, "read", &[b"L", &e(5)]).unwrap(),
        Some(b("b"))
    );
    // Seal installs epoch 1 and reports the highest position written.
    assert_eq!(
        run(&sb, &mut m, "seal", &[b"L", &e(1)]).unwrap(),
        Some(b("5"))
    );
    // The old epoch is refused; the new one writes.
    assert!(matches!(
        run(&sb, &mut m, "write", &[b"L", &e(0), &e(6), b"d"]),
        Err(ScriptError::Aborted(msg)) if msg.contains("stale epoch")
    ));
    assert_eq!(
        run(&sb, &mut m, "write", &[b"L", &e(1), &e(6), b"d"]).unwrap(),
        None
    );
    // Sealing with an epoch not above the current one is refused.
    assert!(matches!(
        run(&sb, &mut m, "seal", &[b"L", &e(1)]),
        Err(ScriptError::Aborted(_))
    ));
    assert_eq!(
        run(&sb, &mut m, "seal", &[b"L", &e(2)]).unwrap(),
        Some(b("6"))
    );
    // An empty log seals at -1.
    assert_eq!(
        run(&sb, &mut m, "seal", &[b"M", &e(1)]).unwrap(),
        Some(b("-1"))
    );
}

#[test]
fn script_names_are_checked_with_typed_errors() {
    assert_eq!(check_name("ok.name-1_x"), Ok(()));
    assert_eq!(check_name(""), Err(NameError::Length));
    assert_eq!(check_name(&"a".repeat(129)), Err(NameError::Length));
    let bad = check_name("a b").unwrap_err();
    assert_eq!(bad, NameError::Characters("a b".into()));
    // Passed on as text, the message names the rule.
    assert!(String::from(bad).contains("letters, digits"));
}

/// A view at a given revision, for `nacre.revision`.
struct AtRevision(Mem, u64);

impl KvView for AtRevision {
    fn get(&self, key: &[u8]) -> Result<Option<KeyEntry>, ViewError> {
        self.0.get(key)
    }

    fn range(
        &self,
        first: Option<&[u8]>,
        last: Option<&[u8]>,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ViewError> {
        self.0.range(first, last, max)
    }

    fn prefix(&self, prefix: &[u8], max: u32) -> Result<Vec<Bytes>, ViewError> {
        self.0.prefix(prefix, max)
    }

    fn revision(&self) -> u64 {
        self.1
    }
}

#[test]
fn a_set_with_a_lease_attaches_the_key_and_the_revision_is_the_views() {
    let sb = sandbox(
        r#"
        function f(k, lease)
          kv.set(k, "held", { lease = tonumber(lease) })
          kv.set("plain", "x", {})
          return kv.get(k) .. "@" .. nacre.revision()
        end
        function bad() kv.set("k", "v", { lease = "seven" }) end
        function bad_options() kv.set("k", "v", 7) end
        "#,
    );
    let view = AtRevision(Mem::default(), 42);
    let out = sb.call(&view, "f", &[b("k"), b("7")]).unwrap();
    assert_eq!(out.value, Some(b("held@42")));
    assert_eq!(
        out.batch.ops,
        vec![
            Op::SetLeased {
                key: b("k"),
                value: b("held"),
                lease: 7
            },
            Op::Set(b("plain"), b("x")),
        ]
    );
    match sb.call(&view, "bad", &[]) {
        Err(ScriptError::Runtime(m)) => {
            assert!(m.contains("lease must be a positive integer"), "{m}")
        }
        r => panic!("expected a runtime error, got {r:?}"),
    }
    match sb.call(&view, "bad_options", &[]) {
        Err(ScriptError::Runtime(m)) => assert!(m.contains("options must be a table"), "{m}"),
        r => panic!("expected a runtime error, got {r:?}"),
    }
}

#[test]
fn a_fenced_call_carries_the_lock_guard() {
    let sb = sandbox(
        r#"
        function f(token)
          nacre.fence("locks/res/", tonumber(token))
          kv.set("data", "mine")
        end
        function bad() nacre.fence("locks/res/", "x") end
        "#,
    );
    let out = sb.call(&Mem::default(), "f", &[b("12")]).unwrap();
    assert!(
        out.batch.guards.contains(&Guard::LockHeld {
            prefix: b("locks/res/"),
            token: 12
        }),
        "{:?}",
        out.batch.guards
    );
    assert_eq!(out.batch.ops, vec![Op::Set(b("data"), b("mine"))]);
    match sb.call(&Mem::default(), "bad", &[]) {
        Err(ScriptError::Runtime(m)) => assert!(m.contains("positive integer"), "{m}"),
        r => panic!("expected a runtime error, got {r:?}"),
    }
}
