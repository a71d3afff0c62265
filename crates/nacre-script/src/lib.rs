//! Nacre's Lua sandbox.
//!
//! A user function runs against a [`KvView`] through a recorder: every key
//! it reads becomes a version guard (`Guard::VersionEquals`, 0 for an
//! absent key), every prefix it lists a `Guard::PrefixKeysEqual`, and
//! every write an op. The result is one guarded [`Batch`]: replicas apply
//! that, never the script, and if a guard fails at apply time the reads
//! went stale and the caller runs the function again.
//!
//! Each call gets a fresh global environment; the libraries it sees are
//! read-only, so nothing a call does survives into the next one. Budgets
//! (instructions, memory, effects) bound every call. The API and the
//! sandbox rules are in `docs/scripts.md`.

mod recorder;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value};
use nacre_proto::{Batch, KeyEntry};
use parking_lot::Mutex;

pub use recorder::Recorder;

/// What a script reads through: the node's committed state.
pub trait KvView {
    fn get(&self, key: &[u8]) -> Result<Option<KeyEntry>, ViewError>;
    /// Entries from `first` (inclusive) to `last` (exclusive), at most
    /// `max`; `None` leaves that end open.
    fn range(
        &self,
        first: Option<&[u8]>,
        last: Option<&[u8]>,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ViewError>;
    /// Keys that start with `prefix`, in order, at most `max`.
    fn prefix(&self, prefix: &[u8], max: u32) -> Result<Vec<Bytes>, ViewError>;
    /// The revision (applied log index) the call reads at.
    fn revision(&self) -> u64 {
        0
    }
}

/// Why a [`KvView`] read failed: the store's own error, kept whole (not
/// flattened to text) so that the caller can still tell corruption from
/// an I/O failure. Two are equal when they say the same.
#[derive(Debug, Clone)]
pub struct ViewError(pub std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>);

impl ViewError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> ViewError {
        ViewError(std::sync::Arc::new(e))
    }
}

impl std::fmt::Display for ViewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ViewError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl PartialEq for ViewError {
    fn eq(&self, other: &ViewError) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for ViewError {}

/// Per-call limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    /// Lua VM instructions per call (counted in steps of
    /// [`HOOK_STEP_INSTRUCTIONS`]).
    pub instructions_max: u64,
    /// Lua heap growth allowed per call.
    pub memory_max_bytes: usize,
    /// Guards plus ops a call may record.
    pub effects_max: usize,
    /// Bytes of keys and values a call may record.
    pub effects_max_bytes: usize,
    /// Results one `kv.range` / `kv.prefix` may return.
    pub scan_results_max: u32,
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets {
            instructions_max: 10_000_000,
            memory_max_bytes: 16 << 20,
            effects_max: 10_000,
            effects_max_bytes: 16 << 20,
            scan_results_max: 10_000,
        }
    }
}

/// The instruction hook runs every this many instructions: small enough
/// that a budget is overrun by little, large enough to cost nothing.
pub const HOOK_STEP_INSTRUCTIONS: u32 = 1000;

/// Script names: what a key-safe, log-safe, shell-safe name may hold.
pub const NAME_SIZE_MAX_BYTES: usize = 128;

/// Why a call or an install failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("function {0:?} not found in the script")]
    FunctionNotFound(String),
    #[error("runtime error: {0}")]
    Runtime(String),
    /// `nacre.abort` / `nacre.check`: the script refused, with its message.
    #[error("aborted: {0}")]
    Aborted(String),
    #[error("{0}")]
    Budget(String),
    #[error("bad return value: {0}")]
    BadReturn(String),
    /// The store failed under the script; not the script's fault.
    #[error("read failed: {0}")]
    View(#[source] ViewError),
}

/// Why a script name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a script name has 1 to {NAME_SIZE_MAX_BYTES} bytes")]
    Length,
    #[error("script name {0:?} may hold only letters, digits, '_', '.' and '-'")]
    Characters(String),
}

/// The message alone, for callers that pass it on as text (an error reply
/// to a client).
impl From<NameError> for String {
    fn from(e: NameError) -> String {
        e.to_string()
    }
}

/// Checks a script name: 1..=128 bytes of `[A-Za-z0-9_.-]`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > NAME_SIZE_MAX_BYTES {
        return Err(NameError::Length);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(NameError::Characters(name.to_string()));
    }
    Ok(())
}

/// Compiles `source` without running it: what an install checks.
pub fn check_syntax(name: &str, source: &[u8]) -> Result<(), ScriptError> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default())
        .map_err(|e| ScriptError::Syntax(e.to_string()))?;
    compile(&lua, name, source).map(|_| ())
}

/// The user source is prefixed on its first line, so line numbers in
/// messages stay the user's: the chunk takes its environment as its
/// argument, which lets one compiled chunk run with a fresh one per call.
const ENV_PREFIX: &str = "local _ENV = ...; ";

fn compile(lua: &Lua, name: &str, source: &[u8]) -> Result<Function, ScriptError> {
    if source.first() == Some(&0x1b) {
        return Err(ScriptError::Syntax("binary chunks are refused".into()));
    }
    let mut text = Vec::with_capacity(ENV_PREFIX.len() + source.len());
    text.extend_from_slice(ENV_PREFIX.as_bytes());
    text.extend_from_slice(source);
    lua.load(text)
        .set_name(format!("={name}"))
        .set_mode(ChunkMode::Text)
        .into_function()
        .map_err(|e| match e {
            mlua::Error::SyntaxError { message, .. } => ScriptError::Syntax(message),
            e => ScriptError::Syntax(e.to_string()),
        })
}

/// What one call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutput {
    /// Guards from the reads, ops from the writes. No ops: the function
    /// only read, and nothing needs proposing.
    pub batch: Batch,
    /// What the function returned (nil: `None`).
    pub value: Option<Bytes>,
}

impl CallOutput {
    pub fn wrote(&self) -> bool {
        !self.batch.ops.is_empty()
    }
}

/// Flags the prelude and the hook share with the host, per Lua state.
#[derive(Default)]
struct Flags {
    instructions_left: AtomicI64,
    out_of_instructions: AtomicBool,
    aborted: AtomicBool,
    view_failed: AtomicBool,
}

/// One compiled script version in its own Lua state. Calls on one
/// sandbox run one at a time; [`ScriptCache`] keeps several per version.
pub struct Sandbox {
    lua: Lua,
    main: Function,
    env_mt: Table,
    set_current: Function,
    flags: Arc<Flags>,
    budgets: Budgets,
    /// Heap in use once set up: the base each call's budget adds to.
    baseline_bytes: usize,
}

impl Sandbox {
    pub fn new(name: &str, source: &[u8], budgets: Budgets) -> Result<Sandbox, ScriptError> {
        let fail = |e: mlua::Error| ScriptError::Runtime(format!("sandbox set-up: {e}"));
        let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8;
        let lua = Lua::new_with(libs, LuaOptions::default()).map_err(fail)?;
        let flags = Arc::new(Flags::default());
        let f = flags.clone();
        let doomed = lua
            .create_function(move |_, ()| {
                Ok(f.out_of_instructions.load(Ordering::Relaxed)
                    || f.aborted.load(Ordering::Relaxed)
                    || f.view_failed.load(Ordering::Relaxed))
            })
            .map_err(fail)?;
        let f = flags.clone();
        let set_abort = lua
            .create_function(move |_, ()| {
                f.aborted.store(true, Ordering::Relaxed);
                Ok(())
            })
            .map_err(fail)?;
        let script = name.to_string();
        let log = lua
            .create_function(move |_, msg: mlua::LuaString| {
                tracing::info!(target: "nacre::script", script = %script, "{}", msg.to_string_lossy());
                Ok(())
            })
            .map_err(fail)?;
        let (env_mt, set_current): (Table, Function) = lua
            .load(include_str!("prelude.lua"))
            .set_name("=prelude")
            .call((doomed, set_abort, log))
            .map_err(fail)?;
        let main = compile(&lua, name, source)?;
        let f = flags.clone();
        let step = HOOK_STEP_INSTRUCTIONS;
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(step),
            move |_, _| {
                if f.instructions_left
                    .fetch_sub(step as i64, Ordering::Relaxed)
                    <= step as i64
                {
                    f.out_of_instructions.store(true, Ordering::Relaxed);
                    return Err(mlua::Error::runtime("instruction budget exceeded"));
                }
                Ok(mlua::VmState::Continue)
            },
        )
        .map_err(fail)?;
        lua.gc_collect().map_err(fail)?;
        let baseline_bytes = lua.used_memory();
        Ok(Sandbox {
            lua,
            main,
            env_mt,
            set_current,
            flags,
            budgets,
            baseline_bytes,
        })
    }

    /// Runs `function(args...)` against `view`; nothing it does outlives
    /// the call but the returned effects.
    pub fn call(
        &self,
        view: &dyn KvView,
        function: &str,
        args: &[Bytes],
    ) -> Result<CallOutput, ScriptError> {
        let b = &self.budgets;
        self.flags.instructions_left.store(
            b.instructions_max.min(i64::MAX as u64) as i64,
            Ordering::Relaxed,
        );
        self.flags
            .out_of_instructions
            .store(false, Ordering::Relaxed);
        self.flags.aborted.store(false, Ordering::Relaxed);
        self.flags.view_failed.store(false, Ordering::Relaxed);
        let used = self.lua.used_memory();
        if used > self.baseline_bytes + b.memory_max_bytes / 2 {
            let _ = self.lua.gc_collect();
        }
        let used = self.lua.used_memory();
        let _ = self.lua.set_memory_limit(used + b.memory_max_bytes);
        let recorder = std::cell::RefCell::new(Recorder::new(b.clone()));
        let view_error = std::cell::RefCell::new(None::<ViewError>);
        let result = self.lua.scope(|scope| {
            let dispatch = scope.create_function(|lua, args: MultiValue| {
                match recorder.borrow_mut().dispatch(lua, view, args) {
                    Ok(v) => Ok((true, v)),
                    Err(recorder::KvError::Script(msg)) => {
                        Ok((false, Value::String(lua.create_string(msg)?)))
                    }
                    Err(recorder::KvError::View(e)) => {
                        self.flags.view_failed.store(true, Ordering::Relaxed);
                        let msg = e.to_string();
                        *view_error.borrow_mut() = Some(e);
                        Ok((false, Value::String(lua.create_string(msg)?)))
                    }
                }
            })?;
            self.set_current.call::<()>(dispatch)?;
            let env = self.lua.create_table()?;
            env.set_metatable(Some(self.env_mt.clone()))?;
            let out = self.run(&env, function, args);
            self.set_current.call::<()>(Value::Nil)?;
            Ok(out)
        });
        let _ = self.lua.set_memory_limit(0);
        let out = match result {
            Ok(out) => out,
            Err(e) => Err(self.classify(e)),
        };
        if let Some(e) = view_error.into_inner() {
            return Err(ScriptError::View(e));
        }
        let value = out?;
        let batch = recorder.into_inner().finish()?;
        Ok(CallOutput { batch, value })
    }

    fn run(
        &self,
        env: &Table,
        function: &str,
        args: &[Bytes],
    ) -> Result<Option<Bytes>, ScriptError> {
        self.main
            .call::<()>(env.clone())
            .map_err(|e| self.classify(e))?;
        let f = match env.raw_get::<Value>(function) {
            Ok(Value::Function(f)) => f,
            _ => return Err(ScriptError::FunctionNotFound(function.to_string())),
        };
        let mut lua_args = MultiValue::with_capacity(args.len());
        for a in args {
            let s = self.lua.create_string(a).map_err(|e| self.classify(e))?;
            lua_args.push_back(Value::String(s));
        }
        let ret: Value = f.call(lua_args).map_err(|e| self.classify(e))?;
        to_bytes(ret)
    }

    fn classify(&self, e: mlua::Error) -> ScriptError {
        if self.flags.out_of_instructions.load(Ordering::Relaxed) {
            return ScriptError::Budget(format!(
                "instruction budget of {} exceeded",
                self.budgets.instructions_max
            ));
        }
        if is_memory_error(&e) {
            return ScriptError::Budget(format!(
                "memory budget of {} bytes exceeded",
                self.budgets.memory_max_bytes
            ));
        }
        let msg = message(&e);
        if self.flags.aborted.load(Ordering::Relaxed) {
            ScriptError::Aborted(msg)
        } else {
            ScriptError::Runtime(msg)
        }
    }
}

fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory_error(cause),
        mlua::Error::RuntimeError(m) => m.starts_with("not enough memory"),
        _ => false,
    }
}

/// The script's own message, without mlua's decoration or traceback.
fn message(e: &mlua::Error) -> String {
    let m = match e {
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => return message(cause),
        mlua::Error::WithContext { cause, .. } => return message(cause),
        e => e.to_string(),
    };
    match m.find("\nstack traceback:") {
        Some(i) => m[..i].to_string(),
        None => m,
    }
}

/// Return values travel as bytes: strings as they are, numbers and
/// booleans as their text, nil as no value.
fn to_bytes(v: Value) -> Result<Option<Bytes>, ScriptError> {
    Ok(match v {
        Value::Nil => None,
        Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        Value::Number(n) => Some(Bytes::from(n.to_string())),
        Value::Boolean(b) => Some(Bytes::from(b.to_string())),
        other => {
            return Err(ScriptError::BadReturn(format!(
                "a function returns nil, a string, a number or a boolean, not a {}",
                other.type_name()
            )))
        }
    })
}

/// Identifies one compiled version. The source is part of the key, so a
/// cached sandbox can never stand for other code, whatever happened to
/// the state (several test clusters in one process share a cache).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScriptKey {
    pub name: String,
    pub version: u64,
    pub source: Bytes,
}

/// Idle sandboxes kept per version: about one per concurrently running
/// call on a busy node.
const IDLE_PER_VERSION_MAX: usize = 16;
/// Versions with cached sandboxes; past this the cache starts over.
const VERSIONS_CACHED_MAX: usize = 256;

/// Compiled sandboxes by version. Which version is live is read from the
/// replicated state on every call, so a version applied on this node is
/// used by the next call: nothing to invalidate for correctness.
pub struct ScriptCache {
    budgets: Budgets,
    idle: Mutex<HashMap<ScriptKey, Vec<Sandbox>>>,
}

impl ScriptCache {
    pub fn new(budgets: Budgets) -> ScriptCache {
        ScriptCache {
            budgets,
            idle: Mutex::new(HashMap::new()),
        }
    }

    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// Calls `function` of the version `key`, compiling it if no sandbox
    /// of that version is idle.
    pub fn call(
        &self,
        key: &ScriptKey,
        view: &dyn KvView,
        function: &str,
        args: &[Bytes],
    ) -> Result<CallOutput, ScriptError> {
        let cached = self.idle.lock().get_mut(key).and_then(Vec::pop);
        let sandbox = match cached {
            Some(s) => s,
            None => Sandbox::new(&key.name, &key.source, self.budgets.clone())?,
        };
        let out = sandbox.call(view, function, args);
        // A sandbox that overran may hold a large heap: start afresh.
        if !matches!(out, Err(ScriptError::Budget(_))) {
            let mut idle = self.idle.lock();
            if idle.len() >= VERSIONS_CACHED_MAX && !idle.contains_key(key) {
                idle.clear();
            }
            let v = idle.entry(key.clone()).or_default();
            if v.len() < IDLE_PER_VERSION_MAX {
                v.push(sandbox);
            }
        }
        out
    }

    /// Drops the cached sandboxes of a script (e.g. after it changed).
    pub fn forget(&self, name: &str) {
        self.idle.lock().retain(|k, _| k.name != name);
    }
}
