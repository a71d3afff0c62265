//! The recorder between a script and the store: reads become guards,
//! writes become ops, and later reads in the same call see earlier writes.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use mlua::{Lua, MultiValue, Table, Value};
use nacre_proto::{Batch, Guard, KeyEntry, Op};

use crate::{Budgets, KvView, ScriptError, ViewError};

pub(crate) enum KvError {
    /// The script misused the API: reported at its line.
    Script(String),
    /// The store failed.
    View(ViewError),
}

fn script(msg: impl Into<String>) -> KvError {
    KvError::Script(msg.into())
}

/// A Lua error while building a result for the script, reported at its line.
fn lua_err(e: mlua::Error) -> KvError {
    script(e.to_string())
}

/// Reads and writes of one call.
pub struct Recorder {
    budgets: Budgets,
    guards: Vec<Guard>,
    /// Keys already guarded (or written before being read: no guard).
    guarded: HashSet<Bytes>,
    ops: Vec<Op>,
    /// This call's writes so far: `None` is a delete.
    overlay: HashMap<Bytes, Option<Bytes>>,
    /// Prefixes this call deleted, for keys not in `overlay`.
    deleted_prefixes: Vec<Bytes>,
    effect_bytes: usize,
    /// A read no guard can cover (a range, a truncated prefix listing):
    /// fine in a read-only call, refused in one that writes.
    unguarded_read: Option<&'static str>,
}

impl Recorder {
    pub fn new(budgets: Budgets) -> Recorder {
        Recorder {
            budgets,
            guards: Vec::new(),
            guarded: HashSet::new(),
            ops: Vec::new(),
            overlay: HashMap::new(),
            deleted_prefixes: Vec::new(),
            effect_bytes: 0,
            unguarded_read: None,
        }
    }

    /// The guarded batch the call amounts to.
    pub fn finish(self) -> Result<Batch, ScriptError> {
        if let (Some(what), false) = (self.unguarded_read, self.ops.is_empty()) {
            return Err(ScriptError::Runtime(format!(
                "a function that writes cannot use {what}: its result cannot be guarded \
                 (use kv.prefix with a max above the number of keys)"
            )));
        }
        Ok(Batch {
            guards: self.guards,
            ops: self.ops,
        })
    }

    fn charge(&mut self, bytes: usize) -> Result<(), KvError> {
        self.effect_bytes += bytes;
        if self.guards.len() + self.ops.len() >= self.budgets.effects_max {
            return Err(script(format!(
                "effects budget of {} guards and ops exceeded",
                self.budgets.effects_max
            )));
        }
        if self.effect_bytes > self.budgets.effects_max_bytes {
            return Err(script(format!(
                "effects budget of {} bytes exceeded",
                self.budgets.effects_max_bytes
            )));
        }
        Ok(())
    }

    fn guard_version(&mut self, key: &Bytes, version: u64) -> Result<(), KvError> {
        if self.guarded.insert(key.clone()) {
            self.charge(key.len())?;
            self.guards.push(Guard::VersionEquals(key.clone(), version));
        }
        Ok(())
    }

    /// The call's own write of `key`, if it made one: `Some(None)` means
    /// it deleted it.
    fn written(&self, key: &[u8]) -> Option<Option<Bytes>> {
        if let Some(v) = self.overlay.get(key) {
            return Some(v.clone());
        }
        self.deleted_prefixes
            .iter()
            .any(|p| key.starts_with(p))
            .then_some(None)
    }

    /// A key's current entry as this call sees it; revisions of a key
    /// written by the call are 0 (not applied yet).
    fn read(&mut self, view: &dyn KvView, key: Bytes) -> Result<Option<KeyEntry>, KvError> {
        if let Some(w) = self.written(&key) {
            return Ok(w.map(|value| KeyEntry {
                key,
                value,
                rev: Default::default(),
            }));
        }
        let e = view.get(&key).map_err(KvError::View)?;
        self.guard_version(&key, e.as_ref().map_or(0, |e| e.rev.version))?;
        Ok(e)
    }

    fn write(&mut self, key: Bytes, value: Option<Bytes>) -> Result<(), KvError> {
        self.charge(key.len() + value.as_ref().map_or(0, Bytes::len))?;
        // A key written before any read needs no guard: its value after
        // the batch does not depend on what was there.
        self.guarded.insert(key.clone());
        self.ops.push(match &value {
            Some(v) => Op::Set(key.clone(), v.clone()),
            None => Op::Remove(key.clone()),
        });
        self.overlay.insert(key, value);
        Ok(())
    }

    /// `kv.set(key, value, {lease = id})`: a set that attaches the key to
    /// the lease; the batch fails with `LeaseNotFound` if it is gone.
    fn write_leased(&mut self, key: Bytes, value: Bytes, lease: u64) -> Result<(), KvError> {
        self.charge(key.len() + value.len() + 8)?;
        self.guarded.insert(key.clone());
        self.ops.push(Op::SetLeased {
            key: key.clone(),
            value: value.clone(),
            lease,
        });
        self.overlay.insert(key, Some(value));
        Ok(())
    }

    pub(crate) fn dispatch(
        &mut self,
        lua: &Lua,
        view: &dyn KvView,
        args: MultiValue,
    ) -> Result<Value, KvError> {
        let mut args = args.into_iter();
        let op = match args.next() {
            Some(Value::String(s)) => s.to_string_lossy(),
            _ => return Err(script("kv: missing operation")),
        };
        let mut arg = |what: &str| -> Result<Option<Bytes>, KvError> {
            match args.next() {
                None | Some(Value::Nil) => Ok(None),
                Some(Value::String(s)) => Ok(Some(Bytes::copy_from_slice(&s.as_bytes()))),
                Some(Value::Integer(i)) if what == "max" => Ok(Some(Bytes::from(i.to_string()))),
                Some(v) => Err(script(format!(
                    "kv.{op}: {what} must be a string, not a {}",
                    v.type_name()
                ))),
            }
        };
        let need = |v: Option<Bytes>, what: &str| {
            v.ok_or_else(|| script(format!("kv.{op}: {what} is required")))
        };
        match op.as_str() {
            "get" => {
                let k = need(arg("key")?, "key")?;
                Ok(match self.read(view, k)? {
                    Some(e) => Value::String(lua.create_string(&e.value).map_err(lua_err)?),
                    None => Value::Nil,
                })
            }
            "exists" => {
                let k = need(arg("key")?, "key")?;
                Ok(Value::Boolean(self.read(view, k)?.is_some()))
            }
            "get_entry" => {
                let k = need(arg("key")?, "key")?;
                Ok(match self.read(view, k)? {
                    Some(e) => Value::Table(entry_table(lua, &e).map_err(lua_err)?),
                    None => Value::Nil,
                })
            }
            "range" => {
                let first = arg("first")?;
                let last = arg("last")?;
                let max = self.max(arg("max")?)?;
                self.range(lua, view, first.as_deref(), last.as_deref(), max)
            }
            "prefix" => {
                let p = need(arg("prefix")?, "prefix")?;
                let max = self.max(arg("max")?)?;
                self.prefix(lua, view, p, max)
            }
            "set" => {
                let k = need(arg("key")?, "key")?;
                let v = need(arg("value")?, "value")?;
                match lease_option(args.next())? {
                    Some(lease) => self.write_leased(k, v, lease)?,
                    None => self.write(k, Some(v))?,
                }
                Ok(Value::Nil)
            }
            "revision" => Ok(Value::Integer(view.revision() as i64)),
            "fence" => {
                let prefix = need(arg("prefix")?, "prefix")?;
                let token = match args.next() {
                    Some(Value::Integer(t)) if t > 0 => t as u64,
                    other => {
                        let what = other.map_or("nothing", |v| v.type_name());
                        return Err(script(format!(
                            "nacre.fence: token must be a positive integer, not {what}"
                        )));
                    }
                };
                self.guards.push(Guard::LockHeld { prefix, token });
                Ok(Value::Nil)
            }
            "delete" => {
                let k = need(arg("key")?, "key")?;
                self.write(k, None)?;
                Ok(Value::Nil)
            }
            "delete_prefix" => {
                let p = need(arg("prefix")?, "prefix")?;
                self.delete_prefix(p)?;
                Ok(Value::Nil)
            }
            other => Err(script(format!("kv.{other}: no such operation"))),
        }
    }

    /// `kv.range`: entries as the store has them. Not guarded (no guard
    /// covers a range), which a call that writes may not rely on.
    fn range(
        &mut self,
        lua: &Lua,
        view: &dyn KvView,
        first: Option<&[u8]>,
        last: Option<&[u8]>,
        max: u32,
    ) -> Result<Value, KvError> {
        let es = view.range(first, last, max).map_err(KvError::View)?;
        self.unguarded_read = Some("kv.range");
        let t = lua.create_table().map_err(lua_err)?;
        for (i, e) in es.iter().enumerate() {
            t.raw_set(i + 1, entry_table(lua, e).map_err(lua_err)?)
                .map_err(lua_err)?;
        }
        Ok(Value::Table(t))
    }

    /// `kv.prefix`: the keys under `p` as this call sees them, guarded by
    /// the whole listing when it is not truncated.
    fn prefix(
        &mut self,
        lua: &Lua,
        view: &dyn KvView,
        p: Bytes,
        max: u32,
    ) -> Result<Value, KvError> {
        // One more than asked tells whether the listing is whole, which the
        // guard needs.
        let mut keys = view
            .prefix(&p, max.saturating_add(1))
            .map_err(KvError::View)?;
        if keys.len() > max as usize {
            keys.truncate(max as usize);
            self.unguarded_read = Some("a truncated kv.prefix");
        } else if !self.deleted_prefixes.iter().any(|d| p.starts_with(d)) {
            self.charge(p.len() + keys.iter().map(Bytes::len).sum::<usize>())?;
            self.guards.push(Guard::PrefixKeysEqual {
                prefix: p.clone(),
                keys: keys.clone(),
            });
        }
        // Merge this call's own writes under the prefix.
        let mut set: std::collections::BTreeSet<Bytes> = keys
            .into_iter()
            .filter(|k| !matches!(self.written(k), Some(None)))
            .collect();
        for (k, v) in &self.overlay {
            if k.starts_with(&p) && v.is_some() {
                set.insert(k.clone());
            }
        }
        let t = lua.create_table().map_err(lua_err)?;
        for (i, k) in set.into_iter().take(max as usize).enumerate() {
            t.raw_set(i + 1, lua.create_string(&k).map_err(lua_err)?)
                .map_err(lua_err)?;
        }
        Ok(Value::Table(t))
    }

    /// `kv.delete_prefix`: one op; later reads in the call see the keys
    /// gone.
    fn delete_prefix(&mut self, p: Bytes) -> Result<(), KvError> {
        self.charge(p.len())?;
        self.overlay.retain(|k, _| !k.starts_with(&p));
        self.ops.push(Op::DeletePrefix(p.clone()));
        self.deleted_prefixes.push(p);
        Ok(())
    }

    fn max(&self, arg: Option<Bytes>) -> Result<u32, KvError> {
        let cap = self.budgets.scan_results_max;
        match arg {
            None => Ok(cap),
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .map(|n| n.min(cap as i64) as u32)
                .ok_or_else(|| script("max must be a non-negative integer")),
        }
    }
}

/// The lease of `kv.set`'s options table (`{lease = id}`), if any.
fn lease_option(v: Option<Value>) -> Result<Option<u64>, KvError> {
    let t = match v {
        None | Some(Value::Nil) => return Ok(None),
        Some(Value::Table(t)) => t,
        Some(v) => {
            return Err(script(format!(
                "kv.set: options must be a table, not a {}",
                v.type_name()
            )))
        }
    };
    match t.raw_get::<Value>("lease").map_err(lua_err)? {
        Value::Nil => Ok(None),
        Value::Integer(id) if id > 0 => Ok(Some(id as u64)),
        v => Err(script(format!(
            "kv.set: lease must be a positive integer id, not {}",
            v.type_name()
        ))),
    }
}

fn entry_table(lua: &Lua, e: &KeyEntry) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 5)?;
    t.raw_set("key", lua.create_string(&e.key)?)?;
    t.raw_set("value", lua.create_string(&e.value)?)?;
    t.raw_set("create_rev", e.rev.create_rev as i64)?;
    t.raw_set("mod_rev", e.rev.mod_rev as i64)?;
    t.raw_set("version", e.rev.version as i64)?;
    Ok(t)
}
