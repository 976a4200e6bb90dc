//! ACL users: who may run which commands on which keys. A documented subset
//! of Redis ACL rules (docs/security.md has the reference):
//!
//! | rule | meaning |
//! |---|---|
//! | `on` / `off` | the user may / may not authenticate (default `off`) |
//! | `>password` | add a password (stored only as its SHA-256) |
//! | `#<64 hex>` | add a password given as its SHA-256 |
//! | `nopass` | any password is accepted |
//! | `resetpass` | forget every password and `nopass` |
//! | `~pattern` | allow keys matching a glob (`*`, `?`, `[a-z]`, `[^a]`, `\x`) |
//! | `allkeys` | `~*` |
//! | `resetkeys` | forget every key pattern |
//! | `+@category` / `-@category` | allow / refuse every command of a category |
//! | `+command` / `-command` | allow / refuse one command |
//! | `allcommands` / `nocommands` | `+@all` / `-@all` |
//! | `reset` | back to a new user: `off resetpass resetkeys nocommands` |
//!
//! Rules apply left to right, so `+@all -@admin` allows everything but the
//! admin commands. AUTH, HELLO, QUIT and `ACL WHOAMI` are always allowed:
//! they are how a client logs in, out, or finds out who it is.
//!
//! The check on the hot path is one bit test on the command id (the
//! metric label index: the primitives in `COMMAND_TABLE` order, then the
//! server commands), plus a glob match per key only for users restricted
//! to key patterns. Without users configured no [`AclUser`] exists and the
//! connection never calls into this module.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use idem_core::command::COMMAND_TABLE;
use idem_core::{CmdError, Command, ErrorCode};
use sha2::{Digest, Sha256};

use crate::server_commands::SERVER_COMMANDS;

/// Most users one server knows: the list is scanned by AUTH.
pub const USERS_MAX: usize = 1024;
/// Most key patterns per user: a command's keys are matched against each.
pub const KEY_PATTERNS_MAX: usize = 64;
/// Longest key pattern, in bytes.
pub const KEY_PATTERN_BYTES_MAX: usize = 1024;
/// Most passwords per user (Redis allows several for rotation).
pub const PASSWORDS_MAX: usize = 16;
/// Longest user name, in bytes.
pub const USER_NAME_BYTES_MAX: usize = 128;

/// How many command ids there are: primitives, then server commands.
const COMMAND_IDS: usize = COMMAND_TABLE.len() + SERVER_COMMANDS.len();
const _: () = assert!(COMMAND_IDS <= 128, "command ids must fit the u128 bitset");

/// A user as configured: a `[[user]]` table of the TOML config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserConfig {
    /// The user name (`AUTH name password`).
    pub name: String,
    /// The password's SHA-256 in hex, as `idem acl hash-password` prints it.
    /// Optional: passwords may also be given in `rules` (`>pw` or `#hex`).
    pub password_hash: Option<String>,
    /// ACL rules, space separated (see the module docs).
    pub rules: String,
}

/// The SHA-256 of a password in lower-case hex: what `password_hash` and
/// the `#<hex>` rule hold.
pub fn hash_password(password: &[u8]) -> String {
    hex(&Sha256::digest(password).into())
}

fn hex(bytes: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let t = text.as_bytes();
    if t.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in t.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A command category: its name and whether a command belongs to it.
struct Category {
    name: &'static str,
    /// Set bits are the command ids in the category.
    members: fn() -> u128,
}

/// Every category, `@all` first. `every_command_has_a_category` checks
/// that each command is in one besides `@all`.
const CATEGORIES: &[Category] = &[
    Category { name: "all", members: || all_ids() },
    Category { name: "idem", members: || primitives(|_, _| true) },
    Category { name: "read", members: || primitives(|_, write| !write) | servers(&["DBSIZE"]) },
    Category { name: "write", members: || primitives(|_, write| write) },
    Category { name: "idempotency", members: || primitives(|n, _| n.starts_with("IDEM.")) },
    Category { name: "claim", members: || primitives(|n, _| matches!(n, "CLAIM" | "CLAIM.ALL" | "RELEASE" | "OWNER")) },
    Category { name: "lock", members: || primitives(|n, _| matches!(n, "LOCK" | "RENEW" | "UNLOCK" | "LOCK.INFO")) },
    Category { name: "token", members: || primitives(|n, _| n.starts_with("TOKEN.")) },
    Category { name: "counter", members: || primitives(|n, _| n.starts_with("COUNTER.")) },
    Category { name: "value", members: || primitives(|n, _| n.starts_with("VALUE.")) },
    Category { name: "fsm", members: || primitives(|n, _| n.starts_with("FSM.")) },
    Category { name: "slots", members: || primitives(|n, _| n.starts_with("SLOTS.")) },
    Category {
        name: "connection",
        members: || servers(&["PING", "ECHO", "HELLO", "AUTH", "QUIT", "CLIENT", "COMMAND", "SELECT"]),
    },
    Category { name: "keyspace", members: || servers(&["DBSIZE"]) },
    Category { name: "admin", members: || servers(&["INFO", "ACL"]) },
];

fn all_ids() -> u128 {
    (1u128 << COMMAND_IDS) - 1
}

fn primitives(pick: impl Fn(&str, bool) -> bool) -> u128 {
    COMMAND_TABLE.iter().enumerate().filter(|(_, (n, _, w))| pick(n, *w)).fold(0, |acc, (i, _)| acc | 1 << i)
}

fn servers(names: &[&str]) -> u128 {
    let mut bits = 0;
    for name in names {
        let i = SERVER_COMMANDS.iter().position(|(n, _)| n == name).expect("category names a server command");
        bits |= 1 << (COMMAND_TABLE.len() + i);
    }
    bits
}

/// The id of a command named `name` (any case), primitive or server.
fn command_id(name: &str) -> Option<usize> {
    COMMAND_TABLE.iter().position(|(n, ..)| n.eq_ignore_ascii_case(name)).or_else(|| {
        SERVER_COMMANDS.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)).map(|i| COMMAND_TABLE.len() + i)
    })
}

fn command_name(id: usize) -> &'static str {
    if id < COMMAND_TABLE.len() {
        COMMAND_TABLE[id].0
    } else {
        SERVER_COMMANDS[id - COMMAND_TABLE.len()].0
    }
}

/// The names of every category, for errors and docs.
pub fn category_names() -> impl Iterator<Item = &'static str> {
    CATEGORIES.iter().map(|c| c.name)
}

/// The commands of category `name`, upper case; `None` for an unknown category.
pub fn category_commands(name: &str) -> Option<Vec<&'static str>> {
    let c = CATEGORIES.iter().find(|c| c.name.eq_ignore_ascii_case(name))?;
    let bits = (c.members)();
    Some((0..COMMAND_IDS).filter(|i| bits & (1 << i) != 0).map(command_name).collect())
}

/// One user, its rules applied. Immutable once built; connections share it.
#[derive(Debug)]
pub struct AclUser {
    name: String,
    enabled: bool,
    nopass: bool,
    passwords: Vec<[u8; 32]>,
    commands: u128,
    /// `None`: every key (`allkeys`). `Some`: only keys matching one of these.
    keys: Option<Vec<Vec<u8>>>,
}

impl AclUser {
    fn new(name: &str) -> AclUser {
        AclUser {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            commands: 0,
            keys: Some(Vec::new()),
        }
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Applies `rules` (space separated) left to right.
    fn apply_rules(&mut self, rules: &str) -> Result<(), String> {
        for rule in rules.split_ascii_whitespace() {
            self.apply_rule(rule)?;
        }
        Ok(())
    }

    fn apply_rule(&mut self, rule: &str) -> Result<(), String> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.keys = None,
            "resetkeys" => self.keys = Some(Vec::new()),
            "allcommands" => self.commands = all_ids(),
            "nocommands" => self.commands = 0,
            "reset" => {
                let name = std::mem::take(&mut self.name);
                *self = AclUser::new(&name);
            }
            _ => return self.apply_prefixed(rule),
        }
        Ok(())
    }

    fn apply_prefixed(&mut self, rule: &str) -> Result<(), String> {
        /// The rules a user may have, for the errors that refuse one.
        const RULES: &str = "rules are on, off, >password, #sha256, nopass, resetpass, ~pattern, allkeys, \
                             resetkeys, +@category, -@category, +command, -command, allcommands, nocommands, reset";
        let (first, rest) = rule.split_at(1);
        match first {
            ">" => self.add_password(Sha256::digest(rest.as_bytes()).into()),
            "#" => self.add_password(unhex(&rest.to_ascii_lowercase()).ok_or_else(|| {
                format!(
                    "'#' must be followed by a SHA-256 in 64 hex digits (see `idem acl hash-password`), got '{rest}'"
                )
            })?),
            "~" => self.add_pattern(rest),
            "+" | "-" => {
                let bits = if let Some(cat) = rest.strip_prefix('@') {
                    let c = CATEGORIES.iter().find(|c| c.name.eq_ignore_ascii_case(cat)).ok_or_else(|| {
                        format!(
                            "unknown category '@{cat}'; categories are @{}",
                            category_names().collect::<Vec<_>>().join(", @")
                        )
                    })?;
                    (c.members)()
                } else {
                    if rest.contains('|') {
                        return Err(format!("subcommand rules such as '{rule}' are not supported; {RULES}"));
                    }
                    let id = command_id(rest).ok_or_else(|| format!("unknown command '{rest}' in rule '{rule}'"))?;
                    1 << id
                };
                if first == "+" {
                    self.commands |= bits;
                } else {
                    self.commands &= !bits;
                }
                Ok(())
            }
            _ => Err(format!("unknown ACL rule '{rule}'; {RULES}")),
        }
    }

    fn add_password(&mut self, hash: [u8; 32]) -> Result<(), String> {
        self.nopass = false;
        if !self.passwords.contains(&hash) {
            if self.passwords.len() == PASSWORDS_MAX {
                return Err(format!("user '{}' has more than {PASSWORDS_MAX} passwords", self.name));
            }
            self.passwords.push(hash);
        }
        Ok(())
    }

    fn add_pattern(&mut self, pattern: &str) -> Result<(), String> {
        if pattern.is_empty() || pattern.len() > KEY_PATTERN_BYTES_MAX {
            return Err(format!("a key pattern must be 1..={KEY_PATTERN_BYTES_MAX} bytes, got {}", pattern.len()));
        }
        if pattern == "*" {
            self.keys = None;
            return Ok(());
        }
        if let Some(keys) = &mut self.keys {
            if keys.len() == KEY_PATTERNS_MAX {
                return Err(format!("user '{}' has more than {KEY_PATTERNS_MAX} key patterns", self.name));
            }
            keys.push(pattern.as_bytes().to_vec());
        }
        Ok(())
    }

    /// Whether `password` logs this user in. Compares hashes in time that
    /// does not depend on where they differ.
    pub fn password_ok(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let given: [u8; 32] = Sha256::digest(password).into();
        self.passwords.iter().fold(false, |ok, h| ok | crate_eq(h, &given))
    }

    /// Checks that the user may run the server command at `index` in
    /// `SERVER_COMMANDS`.
    pub(crate) fn check_server(&self, index: usize) -> Result<(), CmdError> {
        let id = COMMAND_TABLE.len() + index;
        debug_assert!(id < COMMAND_IDS);
        if self.commands & (1 << id) != 0 {
            Ok(())
        } else {
            Err(self.no_command(command_name(id)))
        }
    }

    /// Checks that the user may run `cmd` whose command id is `id`, on
    /// every key it names.
    pub(crate) fn check_primitive(&self, id: usize, cmd: &Command) -> Result<(), CmdError> {
        debug_assert_eq!(command_name(id), cmd.name(), "command id and command agree");
        if self.commands & (1 << id) == 0 {
            return Err(self.no_command(cmd.name()));
        }
        let Some(patterns) = &self.keys else { return Ok(()) };
        for key in cmd.keys() {
            if !patterns.iter().any(|p| glob(p, key)) {
                return Err(self.no_key(key));
            }
        }
        Ok(())
    }

    /// Whether the user may read `key` with the command named `name`: for
    /// the HTTP routes that read a key across primitives.
    pub(crate) fn check_read(&self, name: &str, key: &[u8]) -> Result<(), CmdError> {
        let id = command_id(name).expect("a known command");
        if self.commands & (1 << id) == 0 {
            return Err(self.no_command(command_name(id)));
        }
        match &self.keys {
            Some(patterns) if !patterns.iter().any(|p| glob(p, key)) => Err(self.no_key(key)),
            _ => Ok(()),
        }
    }

    fn no_command(&self, name: &str) -> CmdError {
        CmdError::new(
            ErrorCode::NoPerm,
            format!("User {} has no permissions to run the '{}' command", self.name, name.to_ascii_lowercase()),
        )
    }

    fn no_key(&self, key: &[u8]) -> CmdError {
        let shown = String::from_utf8_lossy(&key[..key.len().min(64)]).into_owned();
        CmdError::new(ErrorCode::NoPerm, format!("User {} has no permissions to access the '{shown}' key", self.name))
    }

    /// The user as `ACL LIST` shows it: passwords as `#<sha256>` only.
    pub fn describe(&self) -> String {
        let mut s = format!("user {} {}", self.name, if self.enabled { "on" } else { "off" });
        if self.nopass {
            s.push_str(" nopass");
        }
        for h in &self.passwords {
            let _ = write!(s, " #{}", hex(h));
        }
        match &self.keys {
            None => s.push_str(" ~*"),
            Some(patterns) if patterns.is_empty() => s.push_str(" resetkeys"),
            Some(patterns) => {
                for p in patterns {
                    let _ = write!(s, " ~{}", String::from_utf8_lossy(p));
                }
            }
        }
        s.push_str(&describe_commands(self.commands));
        s
    }
}

/// `+@all`, `-@all`, or `-@all` then `+cmd` for each allowed command:
/// exact, whatever rules built the set.
fn describe_commands(bits: u128) -> String {
    if bits == all_ids() {
        return " +@all".to_string();
    }
    let mut s = String::from(" -@all");
    for id in (0..COMMAND_IDS).filter(|i| bits & (1 << i) != 0) {
        let _ = write!(s, " +{}", command_name(id).to_ascii_lowercase());
    }
    s
}

fn crate_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The users of one server, built from the configuration at bind.
#[derive(Debug)]
pub struct Acl {
    users: HashMap<String, Arc<AclUser>>,
    /// Password hash -> user, for `Authorization: Bearer <password>`.
    by_password: HashMap<[u8; 32], Arc<AclUser>>,
    /// The user a new connection starts as, when `default` is `on nopass`.
    anonymous: Option<Arc<AclUser>>,
}

impl Acl {
    /// Builds the users. `password` is the server-wide password: with
    /// users configured, it becomes the `default` user's (`on #<hash> ~*
    /// +@all`), so `AUTH <password>` keeps working.
    pub fn build(users: &[UserConfig], password: Option<&str>) -> Result<Acl, String> {
        if users.len() > USERS_MAX {
            return Err(format!("at most {USERS_MAX} users, got {}", users.len()));
        }
        let mut map = HashMap::new();
        for u in users {
            if u.name.is_empty()
                || u.name.len() > USER_NAME_BYTES_MAX
                || u.name.bytes().any(|c| !(b'!'..=b'~').contains(&c))
            {
                return Err(format!(
                    "user name '{}' must be 1..={USER_NAME_BYTES_MAX} printable ASCII bytes without spaces",
                    u.name
                ));
            }
            if u.name == "default" && password.is_some() {
                return Err("both `password` and a [[user]] named 'default' are set: keep one".into());
            }
            let mut user = AclUser::new(&u.name);
            if let Some(h) = &u.password_hash {
                let hash = unhex(&h.to_ascii_lowercase()).ok_or_else(|| {
                    format!(
                        "user '{}': password_hash must be a SHA-256 in 64 hex digits (see `idem acl hash-password`)",
                        u.name
                    )
                })?;
                user.add_password(hash)?;
            }
            user.apply_rules(&u.rules).map_err(|e| format!("user '{}': {e}", u.name))?;
            if map.insert(u.name.clone(), Arc::new(user)).is_some() {
                return Err(format!("user '{}' is configured twice", u.name));
            }
        }
        if let Some(pw) = password {
            let mut user = AclUser::new("default");
            user.apply_rules("on allkeys allcommands")?;
            user.add_password(Sha256::digest(pw.as_bytes()).into())?;
            map.insert("default".into(), Arc::new(user));
        } else if users.is_empty() {
            // No authentication at all: what ACL LIST shows then.
            let mut user = AclUser::new("default");
            user.apply_rules("on nopass allkeys allcommands")?;
            map.insert("default".into(), Arc::new(user));
        }
        let mut by_password = HashMap::new();
        for user in map.values() {
            for h in &user.passwords {
                if let Some(other) = by_password.insert(*h, user.clone()) {
                    return Err(format!(
                        "users '{}' and '{}' share a password; each needs its own, since a Bearer token names its user by its password",
                        other.name, user.name
                    ));
                }
            }
        }
        let anonymous = map.get("default").filter(|d| d.enabled && d.nopass).cloned();
        Ok(Acl { users: map, by_password, anonymous })
    }

    /// The user a new connection is logged in as, if any.
    pub(crate) fn anonymous(&self) -> Option<&Arc<AclUser>> {
        self.anonymous.as_ref()
    }

    /// AUTH: the user `name` (`default` when absent) if `password` logs it in.
    pub(crate) fn authenticate(&self, name: Option<&[u8]>, password: &[u8]) -> Option<&Arc<AclUser>> {
        let name = std::str::from_utf8(name.unwrap_or(b"default")).ok()?;
        let user = self.users.get(name)?;
        user.password_ok(password).then_some(user)
    }

    /// `Authorization: Bearer <password>`: the user whose password it is.
    pub(crate) fn by_token(&self, token: &[u8]) -> Option<&Arc<AclUser>> {
        let hash: [u8; 32] = Sha256::digest(token).into();
        self.by_password.get(&hash).filter(|u| u.enabled)
    }

    /// Every user as `ACL LIST` shows it, sorted by name.
    pub(crate) fn describe(&self) -> Vec<String> {
        let mut users: Vec<_> = self.users.values().collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users.iter().map(|u| u.describe()).collect()
    }
}

/// Redis-style glob: `*` any run, `?` any byte, `[abc]`, `[a-z]`, `[^a]`,
/// `\x` a literal x. Iterative (one backtrack point), so time is bounded by
/// `pattern.len() * key.len()` whatever the pattern.
pub(crate) fn glob(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pattern.len() {
            if pattern[p] == b'*' {
                star = Some((p, k));
                p += 1;
                continue;
            }
            if let Some(next) = match_one(pattern, p, key[k]) {
                p = next;
                k += 1;
                continue;
            }
        }
        match star {
            Some((sp, sk)) => {
                p = sp + 1;
                k = sk + 1;
                star = Some((sp, sk + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// If the pattern element at `p` matches byte `c`, where the next element starts.
fn match_one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c).then_some(p + 2),
        b'[' => {
            let mut i = p + 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            loop {
                let Some(&b) = pattern.get(i) else {
                    // No closing bracket: the '[' is a literal.
                    return (c == b'[').then_some(p + 1);
                };
                if b == b']' && !first {
                    break;
                }
                first = false;
                if b == b'\\' && i + 1 < pattern.len() {
                    matched |= pattern[i + 1] == c;
                    i += 2;
                } else if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&e| e != b']') {
                    let (lo, hi) = (b.min(pattern[i + 2]), b.max(pattern[i + 2]));
                    matched |= (lo..=hi).contains(&c);
                    i += 3;
                } else {
                    matched |= b == c;
                    i += 1;
                }
            }
            (matched != negate).then_some(i + 1)
        }
        lit => (lit == c).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_category() {
        for id in 0..COMMAND_IDS {
            let name = command_name(id);
            let cats: Vec<_> =
                CATEGORIES.iter().skip(1).filter(|c| (c.members)() & (1 << id) != 0).map(|c| c.name).collect();
            assert!(!cats.is_empty(), "{name} is in no category but @all");
        }
        assert_eq!(category_commands("idem").unwrap().len(), COMMAND_TABLE.len(), "@idem is every primitive");
        assert_eq!(category_commands("all").unwrap().len(), COMMAND_IDS);
        let read = category_commands("read").unwrap();
        let write = category_commands("write").unwrap();
        for (name, _, w) in COMMAND_TABLE {
            assert_eq!(write.contains(name), *w, "{name} in @write iff it writes");
            assert_eq!(read.contains(name), !*w, "{name} in @read iff it does not write");
        }
    }

    #[test]
    fn globs() {
        let cases: &[(&str, &str, bool)] = &[
            ("tenant-a:*", "tenant-a:x", true),
            ("tenant-a:*", "tenant-a:", true),
            ("tenant-a:*", "tenant-b:x", false),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("[", "[", true),
            ("**x", "abx", true),
        ];
        for (p, k, want) in cases {
            assert_eq!(glob(p.as_bytes(), k.as_bytes()), *want, "{p} vs {k}");
        }
    }

    #[test]
    fn rules_apply_in_order_and_refuse_with_names() {
        let users = [UserConfig {
            name: "alice".into(),
            password_hash: Some(hash_password(b"pw")),
            rules: "on ~tenant-a:* +@all -@admin -lock".into(),
        }];
        let acl = Acl::build(&users, None).unwrap();
        assert!(acl.authenticate(Some(b"alice"), b"wrong").is_none());
        let alice = acl.authenticate(Some(b"alice"), b"pw").unwrap().clone();
        assert_eq!(acl.by_token(b"pw").unwrap().name(), "alice");
        let limits = idem_core::Limits::default();
        let get = Command::parse(&["VALUE.GET".into(), "tenant-a:1".into()], &limits).unwrap();
        let id = command_id("VALUE.GET").unwrap();
        assert!(alice.check_primitive(id, &get).is_ok());
        let other = Command::parse(&["VALUE.GET".into(), "tenant-b:1".into()], &limits).unwrap();
        let e = alice.check_primitive(id, &other).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoPerm);
        assert!(e.message.contains("tenant-b:1"), "{}", e.message);
        let lock =
            Command::parse(&["LOCK".into(), "tenant-a:l".into(), "o".into(), "LEASE".into(), "1000".into()], &limits)
                .unwrap();
        let e = alice.check_primitive(command_id("LOCK").unwrap(), &lock).unwrap_err();
        assert!(e.message.contains("'lock'"), "{}", e.message);
        let info = SERVER_COMMANDS.iter().position(|(n, _)| *n == "INFO").unwrap();
        assert!(alice.check_server(info).is_err());
        assert!(!alice.describe().contains("pw"), "no clear password in ACL LIST");
    }

    #[test]
    fn bad_rules_are_refused() {
        for rules in ["+@nope", "+NOPE", "#abc", "~", "bogus"] {
            let u = [UserConfig { name: "u".into(), password_hash: None, rules: rules.into() }];
            assert!(Acl::build(&u, None).is_err(), "{rules}");
        }
        for rules in ["+client|id", "%R~x", "&chan", "bogus"] {
            let u = [UserConfig { name: "u".into(), password_hash: None, rules: rules.into() }];
            let err = Acl::build(&u, None).expect_err(rules);
            assert!(err.contains("rules are on, off"), "{rules} is refused with the list of rules: {err}");
        }
        let twice = [UserConfig { name: "default".into(), password_hash: None, rules: "on nopass".into() }];
        assert!(Acl::build(&twice, Some("pw")).is_err());
    }
}
