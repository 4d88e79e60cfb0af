//! The commands: their usage (one table, the source of every help text and of the prompt's
//! completion), parsing a command's words into a [`Command`], and running it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use veddb_client::veddb_wire::{Request, Response, SetCondition, SetOptions, Ttl};
use veddb_client::{CasOutcome, Client, ClientError, Received};

use crate::interrupt::{Interrupt, POLL};
use crate::output::{json_bytes, stats_fields, stats_json, Format, Out};
use crate::words::{show, Word};
use crate::{Failure, Outcome};

/// An option of a command.
pub struct OptionSpec {
    pub name: &'static str,
    /// The name of its value (`MS`), or `None` for a flag.
    pub value: Option<&'static str>,
}

const fn flag(name: &'static str) -> OptionSpec {
    OptionSpec { name, value: None }
}

const fn valued(name: &'static str, value: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        value: Some(value),
    }
}

/// One command: its name, its arguments, what it does, and its options.
pub struct Spec {
    pub name: &'static str,
    /// The arguments after the name, as the usage line shows them.
    pub arguments: &'static str,
    /// What the command does, in one line (the command list of `help`).
    pub summary: &'static str,
    /// The rest of `COMMAND --help`: options, answers, exit status.
    pub details: &'static str,
    pub options: &'static [OptionSpec],
}

impl Spec {
    /// `name arguments`.
    pub fn usage(&self) -> String {
        if self.arguments.is_empty() {
            self.name.to_string()
        } else {
            format!("{} {}", self.name, self.arguments)
        }
    }

    /// The whole help of the command (`COMMAND --help`, `help COMMAND`).
    pub fn help(&self) -> String {
        let mut text = format!("usage: {}\n\n{}.\n", self.usage(), self.summary);
        if !self.details.is_empty() {
            text.push('\n');
            text.push_str(self.details);
            text.push('\n');
        }
        text
    }
}

/// Every command, in the order `help` lists them.
pub const SPECS: &[Spec] = &[
    Spec {
        name: "ping",
        arguments: "",
        summary: "Checks the connection: PONG",
        details: "",
        options: &[],
    },
    Spec {
        name: "get",
        arguments: "KEY [--file PATH]",
        summary: "The value of KEY, with its version",
        details: "  --file PATH    write the value's bytes, exactly, to PATH (created or truncated) instead;
                 - is standard output, with nothing else written there (--output is the same)
Exit status 1 when KEY does not exist (no file is written).",
        options: &[valued("--file", "PATH"), valued("--output", "PATH")],
    },
    Spec {
        name: "set",
        arguments: "KEY (VALUE | --file PATH) [--ttl MS | --keepttl] [--nx | --xx]",
        summary: "Writes VALUE to KEY; prints the key's new version",
        details: "  --file PATH    the value is PATH's bytes, exactly (- is standard input, to its end)
  --ttl MS       expire the key MS milliseconds from now (1 or more); without it, no expiry
  --keepttl      keep the key's current expiry
  --nx           write only if KEY does not exist
  --xx           write only if KEY exists
Exit status 1 when --nx or --xx did not hold (nothing written).",
        options: &[
            valued("--file", "PATH"),
            valued("--ttl", "MS"),
            flag("--keepttl"),
            flag("--nx"),
            flag("--xx"),
        ],
    },
    Spec {
        name: "del",
        arguments: "KEY...",
        summary: "Deletes the keys; prints how many existed",
        details: "Exit status 1 when none existed.",
        options: &[],
    },
    Spec {
        name: "exists",
        arguments: "KEY...",
        summary: "How many of the keys exist (a key named twice counts twice)",
        details: "Exit status 1 when none exists.",
        options: &[],
    },
    Spec {
        name: "cas",
        arguments: "KEY VERSION (VALUE | --file PATH) [--ttl MS]",
        summary: "Writes VALUE only if KEY's version is VERSION (0: only if KEY does not exist)",
        details: "  --file PATH    the value is PATH's bytes, exactly (- is standard input)
  --ttl MS       expire the key MS milliseconds from now; without it the expiry is kept
Exit status 1 when the version did not match (the current one is shown) or KEY does not exist.",
        options: &[valued("--file", "PATH"), valued("--ttl", "MS")],
    },
    Spec {
        name: "incr",
        arguments: "KEY [DELTA]",
        summary: "Adds DELTA (default 1, may be negative) to the decimal integer at KEY (a missing key is 0)",
        details: "",
        options: &[],
    },
    Spec {
        name: "decr",
        arguments: "KEY [DELTA]",
        summary: "Subtracts DELTA (default 1) from the decimal integer at KEY (a missing key is 0)",
        details: "",
        options: &[],
    },
    Spec {
        name: "expire",
        arguments: "KEY MS",
        summary: "Expires KEY MS milliseconds from now (0: now); 1 when KEY exists, else 0",
        details: "Exit status 1 when KEY does not exist.",
        options: &[],
    },
    Spec {
        name: "ttl",
        arguments: "KEY",
        summary: "The time KEY has left before it expires",
        details: "--raw prints milliseconds, -1 for no expiry, -2 for a missing key.
Exit status 1 when KEY does not exist.",
        options: &[],
    },
    Spec {
        name: "persist",
        arguments: "KEY",
        summary: "Removes KEY's expiry; 1 when it had one, else 0",
        details: "Exit status 1 when KEY had no expiry or does not exist.",
        options: &[],
    },
    Spec {
        name: "mget",
        arguments: "KEY...",
        summary: "The values of several keys at once (in order; --raw: an empty line for a missing key)",
        details: "",
        options: &[],
    },
    Spec {
        name: "mset",
        arguments: "KEY VALUE [KEY VALUE...]",
        summary: "Writes several keys at once (atomic per shard, not across shards)",
        details: "",
        options: &[],
    },
    Spec {
        name: "scan",
        arguments: "[PREFIX] [--count N]",
        summary: "Every key that starts with PREFIX (all keys without one), in byte order",
        details: "  --count N      keys asked for per round trip (the server's default without it)",
        options: &[valued("--count", "N")],
    },
    Spec {
        name: "publish",
        arguments: "TOPIC (MESSAGE | --file PATH)",
        summary: "Publishes MESSAGE to TOPIC; prints how many subscribers it was queued for",
        details: "  --file PATH    the message is PATH's bytes, exactly (- is standard input)",
        options: &[valued("--file", "PATH")],
    },
    Spec {
        name: "subscribe",
        arguments: "TOPIC [--count N]",
        summary: "Prints TOPIC's messages as they are published, until Ctrl-C (at the prompt: back to the prompt)",
        details: "  --count N      stop after N messages
A subscriber that falls behind loses its oldest messages; a note says how many.
Underneath, the client fetches the subscription's messages and unsubscribes when it ends.
Exit status 130 when stopped by Ctrl-C.",
        options: &[valued("--count", "N")],
    },
    Spec {
        name: "info",
        arguments: "",
        summary: "Counters of the server, in total and per shard",
        details: "",
        options: &[],
    },
    Spec {
        name: "snapshot",
        arguments: "",
        summary: "Writes every shard to the server's --data-dir; OK once durable",
        details: "",
        options: &[],
    },
    Spec {
        name: "help",
        arguments: "[COMMAND]",
        summary: "The commands, or the usage of one",
        details: "",
        options: &[],
    },
];

/// The names the prompt knows besides the commands.
pub const PROMPT_WORDS: &[&str] = &["quit", "exit"];

/// The command named `name` (any case).
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS
        .iter()
        .find(|spec| spec.name.eq_ignore_ascii_case(name))
}

/// The list of commands, for `help` and `veddb-cli --help`.
pub fn command_list() -> String {
    let width = SPECS
        .iter()
        .map(|spec| spec.usage().len())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for spec in SPECS {
        let usage = spec.usage();
        if usage.len() > 40 {
            text.push_str(&format!("  {usage}\n  {:42}{}\n", "", spec.summary));
        } else {
            text.push_str(&format!(
                "  {usage:width$}  {}\n",
                spec.summary,
                width = width.min(40)
            ));
        }
    }
    text
}

/// A command, parsed and checked: what runs once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Ping,
    Get {
        key: Bytes,
        destination: Option<Destination>,
    },
    Set {
        key: Bytes,
        value: Bytes,
        options: SetOptions,
    },
    Delete {
        keys: Vec<Bytes>,
    },
    Exists {
        keys: Vec<Bytes>,
    },
    Cas {
        key: Bytes,
        expected_version: u64,
        value: Bytes,
        ttl_ms: Option<u64>,
    },
    Incr {
        key: Bytes,
        delta: i64,
    },
    Expire {
        key: Bytes,
        ttl_ms: u64,
    },
    Ttl {
        key: Bytes,
    },
    Persist {
        key: Bytes,
    },
    MGet {
        keys: Vec<Bytes>,
    },
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
    },
    Scan {
        prefix: Bytes,
        count: u32,
    },
    Publish {
        topic: Bytes,
        message: Bytes,
    },
    Subscribe {
        topic: Bytes,
        count: Option<u64>,
    },
    Info,
    Snapshot,
}

impl Command {
    /// Whether the command runs until stopped (it cannot be repeated).
    pub fn runs_until_stopped(&self) -> bool {
        matches!(self, Command::Subscribe { .. })
    }

    /// Refuses a command whose output cannot be written in `format`.
    pub fn check_format(&self, format: Format) -> Result<(), String> {
        match (self, format) {
            (
                Command::Get {
                    destination: Some(Destination::Stdout),
                    ..
                },
                Format::Json,
            ) => Err(
                "--json and get --file - cannot be given together (--file - writes the \
                      value's bytes alone to standard output)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// Where `get --file` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Standard output, the bytes alone.
    Stdout,
    File(PathBuf),
}

/// Where a command may read a value from (`--file`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Files, and standard input (`--file -`).
    FilesAndStdin,
    /// Files only: standard input carries the commands (the prompt).
    FilesOnly,
}

/// What the words of a command ask for.
#[derive(Debug)]
pub enum Parsed {
    Run(Command),
    /// `COMMAND --help`, `help COMMAND`: print this.
    Help(String),
}

/// A command's words split into its positional arguments and its options (in the order
/// given, each at most once).
struct Arguments<'a> {
    spec: &'static Spec,
    positional: Vec<&'a Word>,
    options: Vec<(&'static str, Option<Word>)>,
}

impl<'a> Arguments<'a> {
    /// Splits `words` (after the command name) for `spec`; `None` when `--help` is among the
    /// options.
    fn split(spec: &'static Spec, words: &'a [Word]) -> Result<Option<Arguments<'a>>, String> {
        let mut arguments = Arguments {
            spec,
            positional: Vec::new(),
            options: Vec::new(),
        };
        let mut words = words.iter();
        while let Some(word) = words.next() {
            if word.is_end_of_options() {
                arguments.positional.extend(words.by_ref());
                break;
            }
            let Some(name) = word.option_name() else {
                arguments.positional.push(word);
                continue;
            };
            if name == "--help" {
                return Ok(None);
            }
            let Some(option) = spec.options.iter().find(|option| option.name == name) else {
                let known = if spec.options.is_empty() {
                    format!("{} takes no options", spec.name)
                } else {
                    let names: Vec<&str> = spec.options.iter().map(|option| option.name).collect();
                    format!("{} takes {}", spec.name, names.join(", "))
                };
                return Err(format!(
                    "unknown option {name} ({known}; a value that starts with -- goes after --, \
                     as in `{} -- --value`)",
                    spec.name
                ));
            };
            if arguments.options.iter().any(|(given, _)| *given == name) {
                return Err(format!("{name} is given twice"));
            }
            let value = match (option.value, word.glued_value()) {
                (None, None) => None,
                (None, Some(_)) => return Err(format!("{name} takes no value")),
                (Some(_), Some(value)) => Some(value),
                (Some(what), None) => match words.next() {
                    Some(value) => Some(value.clone()),
                    None => return Err(format!("{name} needs a value: {name} {what}")),
                },
            };
            arguments.options.push((option.name, value));
        }
        Ok(Some(arguments))
    }

    /// Whether the flag or option `name` was given.
    fn has(&self, name: &str) -> bool {
        self.options.iter().any(|(given, _)| *given == name)
    }

    /// The value of option `name`, if given.
    fn value(&self, name: &str) -> Option<&Word> {
        self.options
            .iter()
            .find(|(given, _)| *given == name)
            .and_then(|(_, value)| value.as_ref())
    }

    /// Refuses two options that cannot go together.
    fn exclusive(&self, first: &str, second: &str, why: &str) -> Result<(), String> {
        if self.has(first) && self.has(second) {
            return Err(format!(
                "{first} and {second} cannot be given together ({why})"
            ));
        }
        Ok(())
    }

    /// The error for a wrong number of positional arguments.
    fn arity(&self) -> String {
        format!(
            "{}: wrong number of arguments ({} given); usage: {}",
            self.spec.name,
            self.positional.len(),
            self.spec.usage()
        )
    }

    /// Exactly `N` positional arguments.
    fn exactly<const N: usize>(&self) -> Result<[&'a Word; N], String> {
        <[&Word; N]>::try_from(self.positional.as_slice()).map_err(|_| self.arity())
    }
}

/// A word as data (a key, a value, a topic).
fn data(word: &Word) -> Result<Bytes, String> {
    word.data().map(Bytes::from)
}

/// A number, with what it is and the range it must be in named when it is not one.
fn number<T>(word: &Word, what: &str, range: &str) -> Result<T, String>
where
    T: std::str::FromStr,
{
    word.text()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("{what} must be {range}, not {}", show(word.raw())))
}

/// `--ttl MS`: 1 or more.
fn ttl_option(arguments: &Arguments) -> Result<Option<u64>, String> {
    arguments
        .value("--ttl")
        .map(|word| {
            number::<u64>(word, "--ttl", "a whole number of milliseconds, 1 or more").and_then(
                |ms| {
                    if ms == 0 {
                        Err("--ttl must be 1 ms or more (expire KEY 0 expires a key now)".into())
                    } else {
                        Ok(ms)
                    }
                },
            )
        })
        .transpose()
}

/// A `--count N` of 1 or more.
fn count_option<T: std::str::FromStr + PartialEq + From<u8>>(
    arguments: &Arguments,
) -> Result<Option<T>, String> {
    arguments
        .value("--count")
        .map(|word| {
            let count: T = number(word, "--count", "a whole number, 1 or more")?;
            if count == T::from(0) {
                return Err("--count must be 1 or more".into());
            }
            Ok(count)
        })
        .transpose()
}

/// The bytes of `--file PATH`, exactly: the file's, or standard input's to its end for `-`.
fn read_file(path: &Word, input: Input) -> Result<Bytes, String> {
    use std::io::Read;
    if path.raw() == b"-" {
        if input == Input::FilesOnly {
            return Err(
                "--file - reads standard input, which carries the commands at the \
                        prompt; name a file"
                    .into(),
            );
        }
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|error| format!("cannot read standard input: {error}"))?;
        return Ok(Bytes::from(bytes));
    }
    std::fs::read(path.os())
        .map(Bytes::from)
        .map_err(|error| format!("cannot read {}: {error}", path.os().to_string_lossy()))
}

/// The value of SET, CAS or PUBLISH: the positional `VALUE` or `--file PATH`, one of them.
fn value_or_file(
    arguments: &Arguments,
    value: Option<&Word>,
    what: &str,
    input: Input,
) -> Result<Bytes, String> {
    match (value, arguments.value("--file")) {
        (Some(_), Some(_)) => Err(format!(
            "{}: give the {what} once: {} or --file PATH",
            arguments.spec.name,
            what.to_ascii_uppercase()
        )),
        (Some(value), None) => data(value),
        (None, Some(path)) => read_file(path, input),
        (None, None) => Err(arguments.arity()),
    }
}

/// Parses the words of a command (its name first): what to run, its help, or why not
/// (a usage error, or a `--file` that cannot be read).
pub fn parse(words: &[Word], input: Input) -> Result<Parsed, String> {
    let Some((name, rest)) = words.split_first() else {
        return Err("no command; see help".into());
    };
    let name_text = name.text().unwrap_or("");
    let Some(spec) = spec(name_text) else {
        return Err(format!(
            "unknown command {}; `help` lists the commands",
            show(name.raw())
        ));
    };
    let Some(arguments) = Arguments::split(spec, rest)? else {
        return Ok(Parsed::Help(spec.help()));
    };
    let command = match spec.name {
        "ping" => {
            arguments.exactly::<0>()?;
            Command::Ping
        }
        "info" => {
            arguments.exactly::<0>()?;
            Command::Info
        }
        "snapshot" => {
            arguments.exactly::<0>()?;
            Command::Snapshot
        }
        "help" => {
            return match arguments.positional.as_slice() {
                [] => Ok(Parsed::Help(general_help())),
                [command] => match self::spec(command.text().unwrap_or("")) {
                    Some(spec) => Ok(Parsed::Help(spec.help())),
                    None => Err(format!(
                        "unknown command {}; `help` lists the commands",
                        show(command.raw())
                    )),
                },
                _ => Err(arguments.arity()),
            };
        }
        "get" => {
            let [key] = arguments.exactly()?;
            arguments.exclusive("--file", "--output", "they are the same option")?;
            let path = arguments
                .value("--file")
                .or_else(|| arguments.value("--output"));
            Command::Get {
                key: data(key)?,
                destination: path.map(|path| {
                    if path.raw() == b"-" {
                        Destination::Stdout
                    } else {
                        Destination::File(PathBuf::from(path.os()))
                    }
                }),
            }
        }
        "set" => {
            let (key, value) = match arguments.positional.as_slice() {
                [key] => (*key, None),
                [key, value] => (*key, Some(*value)),
                _ => return Err(arguments.arity()),
            };
            arguments.exclusive(
                "--nx",
                "--xx",
                "--nx writes only a missing key, --xx only an existing one",
            )?;
            arguments.exclusive(
                "--ttl",
                "--keepttl",
                "--ttl sets a new expiry, --keepttl keeps the current one",
            )?;
            let condition = if arguments.has("--nx") {
                SetCondition::IfAbsent
            } else if arguments.has("--xx") {
                SetCondition::IfPresent
            } else {
                SetCondition::Always
            };
            let options = SetOptions {
                ttl_ms: ttl_option(&arguments)?,
                condition,
                keep_ttl: arguments.has("--keepttl"),
            };
            let key = data(key)?;
            Command::Set {
                value: value_or_file(&arguments, value, "value", input)?,
                key,
                options,
            }
        }
        "del" | "exists" | "mget" => {
            if arguments.positional.is_empty() {
                return Err(arguments.arity());
            }
            let keys = arguments
                .positional
                .iter()
                .map(|word| data(word))
                .collect::<Result<Vec<_>, _>>()?;
            match spec.name {
                "del" => Command::Delete { keys },
                "exists" => Command::Exists { keys },
                _ => Command::MGet { keys },
            }
        }
        "cas" => {
            let (key, version, value) = match arguments.positional.as_slice() {
                [key, version] => (*key, *version, None),
                [key, version, value] => (*key, *version, Some(*value)),
                _ => return Err(arguments.arity()),
            };
            let expected_version = number(
                version,
                "VERSION",
                "a version number (0: only if the key does not exist)",
            )?;
            let key = data(key)?;
            Command::Cas {
                ttl_ms: ttl_option(&arguments)?,
                value: value_or_file(&arguments, value, "value", input)?,
                key,
                expected_version,
            }
        }
        "incr" | "decr" => {
            let (key, delta) = match arguments.positional.as_slice() {
                [key] => (*key, 1),
                [key, delta] => (
                    *key,
                    number::<i64>(
                        delta,
                        "DELTA",
                        "a whole number from -9223372036854775808 to 9223372036854775807",
                    )?,
                ),
                _ => return Err(arguments.arity()),
            };
            let delta = if spec.name == "decr" {
                delta.checked_neg().ok_or_else(|| {
                    "decr: DELTA -9223372036854775808 cannot be negated; use incr".to_string()
                })?
            } else {
                delta
            };
            Command::Incr {
                key: data(key)?,
                delta,
            }
        }
        "expire" => {
            let [key, ms] = arguments.exactly()?;
            Command::Expire {
                ttl_ms: number(ms, "MS", "a whole number of milliseconds, 0 or more")?,
                key: data(key)?,
            }
        }
        "ttl" => {
            let [key] = arguments.exactly()?;
            Command::Ttl { key: data(key)? }
        }
        "persist" => {
            let [key] = arguments.exactly()?;
            Command::Persist { key: data(key)? }
        }
        "mset" => {
            let words = &arguments.positional;
            if words.is_empty() || words.len() % 2 != 0 {
                return Err(format!(
                    "mset: keys and values go in pairs ({} words given); usage: {}",
                    words.len(),
                    spec.usage()
                ));
            }
            let pairs = words
                .chunks(2)
                .map(|pair| Ok((data(pair[0])?, data(pair[1])?)))
                .collect::<Result<Vec<_>, String>>()?;
            Command::MSet { pairs }
        }
        "scan" => {
            let prefix = match arguments.positional.as_slice() {
                [] => Bytes::new(),
                [prefix] => data(prefix)?,
                _ => return Err(arguments.arity()),
            };
            Command::Scan {
                prefix,
                count: count_option::<u32>(&arguments)?.unwrap_or(0),
            }
        }
        "publish" => {
            let (topic, message) = match arguments.positional.as_slice() {
                [topic] => (*topic, None),
                [topic, message] => (*topic, Some(*message)),
                _ => return Err(arguments.arity()),
            };
            let topic = data(topic)?;
            Command::Publish {
                message: value_or_file(&arguments, message, "message", input)?,
                topic,
            }
        }
        "subscribe" => {
            let [topic] = arguments.exactly()?;
            Command::Subscribe {
                topic: data(topic)?,
                count: count_option::<u64>(&arguments)?,
            }
        }
        other => unreachable!("{other} is in SPECS but has no parser"),
    };
    Ok(Parsed::Run(command))
}

/// The help of the prompt and of `help`: the commands.
pub fn general_help() -> String {
    format!(
        "Commands (COMMAND --help or help COMMAND for one):\n{}\
         At the prompt also: quit, exit (or Ctrl-D). Tab completes command names; Up and \
         Down recall earlier lines.\n\
         Quoting at the prompt: \"...\" takes the escapes \\xHH \\n \\r \\t \\a \\b \\\\ \\\" \
         \\'; '...' takes everything as it is.\n",
        command_list()
    )
}

/// The server's refusal (or a broken connection) as a failure.
fn refused(error: ClientError) -> Failure {
    Failure::Refused(error)
}

/// An answer that does not fit the request: a defect of the server or of this client.
fn unexpected(answer: Response) -> Failure {
    Failure::Refused(ClientError::Protocol(format!(
        "unexpected answer {answer:?}"
    )))
}

/// A negative answer (exit status 1) in the three formats: a note for a person, nothing for
/// a script, `json` for JSON.
fn negative(out: &mut Out, note: &str, json: Value) -> Result<Outcome, Failure> {
    match out.format {
        Format::Human => out.line(note)?,
        Format::Raw => {}
        Format::Json => out.json(&json)?,
    }
    Ok(Outcome::Negative)
}

/// A count of keys (DEL, EXISTS): 1 when it is 0.
fn count(out: &mut Out, count: i64) -> Result<Outcome, Failure> {
    out.integer(count)?;
    Ok(if count == 0 {
        Outcome::Negative
    } else {
        Outcome::Done
    })
}

/// Runs each key's request pipelined; how many answered `true`.
fn count_true(
    client: &Client,
    keys: &[Bytes],
    request: impl Fn(Bytes) -> Request,
) -> Result<i64, Failure> {
    let answers = client
        .execute_many(keys.iter().cloned().map(request).collect())
        .map_err(refused)?;
    let mut total = 0;
    for answer in answers {
        match answer.map_err(refused)? {
            Response::Bool(true) => total += 1,
            Response::Bool(false) => {}
            other => return Err(unexpected(other)),
        }
    }
    Ok(total)
}

/// Runs one command and writes its answer.
pub fn execute(
    client: &Client,
    command: &Command,
    out: &mut Out,
    interrupt: &Interrupt,
) -> Result<Outcome, Failure> {
    match command {
        Command::Ping => {
            client.ping().map_err(refused)?;
            out.word("PONG")?;
        }
        Command::Get { key, destination } => {
            let Some((value, version)) = client.get(key.clone()).map_err(refused)? else {
                return negative(out, "(not found)", Value::Null);
            };
            match destination {
                None => out.value(
                    &value,
                    &format!(" (version {version})"),
                    json!({ "value": json_bytes(&value), "version": version }),
                )?,
                Some(Destination::Stdout) => out.bytes(&value)?,
                Some(Destination::File(path)) => {
                    std::fs::write(path, &value).map_err(|error| {
                        Failure::Io(format!(
                            "cannot write the value to {}: {error}",
                            path.display()
                        ))
                    })?;
                    match out.format {
                        Format::Human => out.line(&format!(
                            "OK ({} bytes written to {}, version {version})",
                            value.len(),
                            path.display()
                        ))?,
                        Format::Raw => out.word("OK")?,
                        Format::Json => out.json(&json!({
                            "path": path.to_string_lossy(),
                            "bytes": value.len(),
                            "version": version,
                        }))?,
                    }
                }
            }
        }
        Command::Set {
            key,
            value,
            options,
        } => match client
            .set(key.clone(), value.clone(), *options)
            .map_err(refused)?
        {
            Some(version) => written(out, version)?,
            None => {
                let why = match options.condition {
                    SetCondition::IfAbsent => "(not stored: the key exists)",
                    _ => "(not stored: the key does not exist)",
                };
                return negative(out, why, json!({ "stored": false }));
            }
        },
        Command::Delete { keys } => {
            return count(
                out,
                count_true(client, keys, |key| Request::Delete { key })?,
            )
        }
        Command::Exists { keys } => {
            return count(
                out,
                count_true(client, keys, |key| Request::Exists { key })?,
            )
        }
        Command::Cas {
            key,
            expected_version,
            value,
            ttl_ms,
        } => match client
            .cas(key.clone(), *expected_version, value.clone(), *ttl_ms)
            .map_err(refused)?
        {
            CasOutcome::Stored { version } => written(out, version)?,
            CasOutcome::VersionMismatch { current } => {
                return negative(
                    out,
                    &format!("(version mismatch: the current version is {current})"),
                    json!({ "stored": false, "current_version": current }),
                )
            }
            CasOutcome::NotFound => return negative(out, "(not found)", Value::Null),
        },
        Command::Incr { key, delta } => {
            let value = client.incr(key.clone(), *delta).map_err(refused)?;
            out.integer(value)?;
        }
        Command::Expire { key, ttl_ms } => {
            let existed = client.expire(key.clone(), *ttl_ms).map_err(refused)?;
            return changed(out, existed);
        }
        Command::Persist { key } => {
            let removed = client.persist(key.clone()).map_err(refused)?;
            return changed(out, removed);
        }
        Command::Ttl { key } => {
            let ttl = client.ttl(key.clone()).map_err(refused)?;
            let json = match ttl {
                Ttl::Missing => {
                    json!({ "exists": false, "persistent": false, "remaining_ms": null })
                }
                Ttl::Persistent => {
                    json!({ "exists": true, "persistent": true, "remaining_ms": null })
                }
                Ttl::Remaining(ms) => {
                    json!({ "exists": true, "persistent": false, "remaining_ms": ms })
                }
            };
            match (out.format, ttl) {
                (Format::Json, _) => out.json(&json)?,
                (Format::Human, Ttl::Missing) => out.line("(not found)")?,
                (Format::Human, Ttl::Persistent) => out.line("(no expiry)")?,
                (Format::Human, Ttl::Remaining(ms)) => out.line(&format!("{ms} ms"))?,
                (Format::Raw, Ttl::Missing) => out.integer(-2)?,
                (Format::Raw, Ttl::Persistent) => out.integer(-1)?,
                (Format::Raw, Ttl::Remaining(ms)) => out.line(&ms.to_string())?,
            }
            if ttl == Ttl::Missing {
                return Ok(Outcome::Negative);
            }
        }
        Command::MGet { keys } => {
            let values = client.mget(keys.clone()).map_err(refused)?;
            match out.format {
                Format::Json => {
                    let entries: Vec<Value> = keys
                        .iter()
                        .zip(&values)
                        .map(|(key, value)| match value {
                            Some((value, version)) => json!({
                                "key": json_bytes(key),
                                "value": json_bytes(value),
                                "version": version,
                            }),
                            None => json!({ "key": json_bytes(key), "value": null }),
                        })
                        .collect();
                    out.json(&Value::Array(entries))?;
                }
                Format::Raw => {
                    for value in &values {
                        out.bytes_line(value.as_ref().map_or(&[][..], |(value, _)| value))?;
                    }
                }
                Format::Human => {
                    for (key, value) in keys.iter().zip(&values) {
                        match value {
                            Some((value, version)) => out.line(&format!(
                                "{} = {} (version {version})",
                                show(key),
                                show(value)
                            ))?,
                            None => out.line(&format!("{} = (not found)", show(key)))?,
                        }
                    }
                }
            }
        }
        Command::MSet { pairs } => {
            client.mset(pairs.clone()).map_err(refused)?;
            out.word("OK")?;
        }
        Command::Scan { prefix, count } => {
            let mut cursor = Bytes::new();
            let mut found = 0u64;
            loop {
                let (keys, next) = client
                    .scan(cursor, prefix.clone(), *count)
                    .map_err(refused)?;
                for key in &keys {
                    out.value(key, "", json_bytes(key))?;
                }
                found += keys.len() as u64;
                if next.is_empty() {
                    break;
                }
                cursor = next;
            }
            if found == 0 && out.format == Format::Human {
                out.line("(no keys)")?;
            }
        }
        Command::Publish { topic, message } => {
            let receivers = client
                .publish(topic.clone(), message.clone())
                .map_err(refused)?;
            match out.format {
                Format::Json => out.json(&json!({ "receivers": receivers }))?,
                _ => out.integer(i64::from(receivers))?,
            }
        }
        Command::Subscribe { topic, count } => {
            return subscribe(client, topic, *count, out, interrupt);
        }
        Command::Info => info(client, out)?,
        Command::Snapshot => {
            client.snapshot().map_err(refused)?;
            out.word("OK")?;
        }
    }
    Ok(Outcome::Done)
}

/// A write's new version.
fn written(out: &mut Out, version: u64) -> Result<(), Failure> {
    match out.format {
        Format::Human => out.line(&format!("OK (version {version})")),
        Format::Raw => out.line("OK"),
        Format::Json => out.json(&json!({ "stored": true, "version": version })),
    }
}

/// EXPIRE and PERSIST: 1 when the key's expiry changed, else 0 (exit status 1).
fn changed(out: &mut Out, changed: bool) -> Result<Outcome, Failure> {
    match out.format {
        Format::Json => out.json(&Value::Bool(changed))?,
        _ => out.integer(i64::from(changed))?,
    }
    Ok(if changed {
        Outcome::Done
    } else {
        Outcome::Negative
    })
}

/// `subscribe TOPIC [--count N]`: messages as they come, until Ctrl-C or N of them.
fn subscribe(
    client: &Client,
    topic: &Bytes,
    count: Option<u64>,
    out: &mut Out,
    interrupt: &Interrupt,
) -> Result<Outcome, Failure> {
    let mut subscription = client.subscribe(topic.clone()).map_err(refused)?;
    crate::note(&format!("subscribed to {}; Ctrl-C to stop", show(topic)));
    let mut received = 0u64;
    loop {
        if count.is_some_and(|count| received >= count) {
            return Ok(Outcome::Done);
        }
        if interrupt.take() {
            drop(subscription);
            // On a terminal, after the "^C" that it echoed.
            let line_break = if std::io::stderr().is_terminal() {
                "\n"
            } else {
                ""
            };
            crate::note(&format!("{line_break}unsubscribed from {}", show(topic)));
            return Ok(Outcome::Interrupted);
        }
        match subscription.receive(POLL).map_err(refused)? {
            Received::Timeout => {}
            Received::Ended => {
                return Err(Failure::Refused(ClientError::Protocol(
                    "the server ended the subscription".into(),
                )))
            }
            Received::Message { message, dropped } => {
                if dropped > 0 && out.format != Format::Json {
                    crate::note(&format!(
                        "(dropped {dropped} messages before this one: this subscriber was too slow)"
                    ));
                }
                out.value(
                    &message,
                    "",
                    json!({ "message": json_bytes(&message), "dropped": dropped }),
                )?;
                out.flush()?;
                received += 1;
            }
        }
    }
}

fn info(client: &Client, out: &mut Out) -> Result<(), Failure> {
    let info = client.info().map_err(refused)?;
    let total = info.total();
    match out.format {
        Format::Json => {
            let shards: Vec<Value> = info
                .shards
                .iter()
                .map(|shard| stats_json(shard, Some(shard.shard)))
                .collect();
            out.json(&json!({ "total": stats_json(&total, None), "shards": shards }))?;
        }
        Format::Raw => {
            out.line(&format!("shards:{}", info.shards.len()))?;
            for (name, value) in stats_fields(&total) {
                out.line(&format!("{name}:{value}"))?;
            }
            for shard in &info.shards {
                for (name, value) in stats_fields(shard) {
                    out.line(&format!("shard{}.{name}:{value}", shard.shard))?;
                }
            }
        }
        Format::Human => {
            out.line(&format!("shards: {}", info.shards.len()))?;
            out.line(&format!(
                "ops: {}  hits: {}  misses: {}  keys: {}  memory: {} / {} bytes",
                total.ops,
                total.hits,
                total.misses,
                total.keys,
                total.memory_bytes_used,
                total.memory_bytes_limit
            ))?;
            out.line(&format!(
                "expired: {}  evicted: {}  out-of-memory errors: {}",
                total.expired_keys, total.evicted_keys, total.out_of_memory_errors
            ))?;
            out.line(&format!(
                "topics: {}  subscribers: {}  published: {}  delivered: {}  dropped: {}",
                total.topics,
                total.subscribers,
                total.messages_published,
                total.messages_delivered,
                total.messages_dropped
            ))?;
            for shard in &info.shards {
                out.line(&format!(
                    "  shard {}: ops {}  keys {}  memory {}  forwarded-in {}",
                    shard.shard, shard.ops, shard.keys, shard.memory_bytes_used, shard.forwarded_in
                ))?;
            }
        }
    }
    Ok(())
}

/// How long `--interval S` may be.
pub const INTERVAL_MAX: Duration = Duration::from_secs(24 * 60 * 60);

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    /// Command-line words (escapes apply).
    fn argv(words: &[&str]) -> Vec<Word> {
        words
            .iter()
            .map(|word| Word::argument(OsString::from(word), false))
            .collect()
    }

    fn run(words: &[&str]) -> Command {
        match parse(&argv(words), Input::FilesOnly) {
            Ok(Parsed::Run(command)) => command,
            other => panic!("{words:?}: {other:?}"),
        }
    }

    fn error(words: &[&str]) -> String {
        match parse(&argv(words), Input::FilesOnly) {
            Err(error) => error,
            other => panic!("{words:?} should be refused: {other:?}"),
        }
    }

    fn b(text: &[u8]) -> Bytes {
        Bytes::copy_from_slice(text)
    }

    #[test]
    fn every_spec_has_a_parser_and_a_help() {
        for spec in SPECS {
            match parse(&argv(&[spec.name, "--help"]), Input::FilesOnly) {
                Ok(Parsed::Help(text)) => {
                    assert!(text.starts_with(&format!("usage: {}", spec.name)), "{text}")
                }
                other => panic!("{}: {other:?}", spec.name),
            }
            // Any other outcome than "unreachable" is fine: each name reaches a parser.
            let _ = parse(&argv(&[spec.name]), Input::FilesOnly);
        }
        assert!(general_help().contains("subscribe TOPIC [--count N]"));
    }

    #[test]
    fn commands_parse_with_their_options() {
        assert_eq!(run(&["PING"]), Command::Ping);
        assert_eq!(
            run(&["set", r"bin\x00", r"a\xffb", "--ttl", "500", "--nx"]),
            Command::Set {
                key: b(b"bin\x00"),
                value: b(b"a\xffb"),
                options: SetOptions {
                    ttl_ms: Some(500),
                    condition: SetCondition::IfAbsent,
                    keep_ttl: false,
                },
            }
        );
        assert_eq!(
            run(&["set", "k", "v", "--keepttl", "--xx"]),
            Command::Set {
                key: b(b"k"),
                value: b(b"v"),
                options: SetOptions {
                    ttl_ms: None,
                    condition: SetCondition::IfPresent,
                    keep_ttl: true,
                },
            }
        );
        // --opt=value, and -- before a value that looks like an option.
        assert_eq!(
            run(&["set", "--ttl=7", "--", "k", "--nx"]),
            Command::Set {
                key: b(b"k"),
                value: b(b"--nx"),
                options: SetOptions {
                    ttl_ms: Some(7),
                    ..SetOptions::default()
                },
            }
        );
        assert_eq!(
            run(&["get", "--", "--help"]),
            Command::Get {
                key: b(b"--help"),
                destination: None
            }
        );
        assert_eq!(
            run(&["get", "k", "--output", "-"]),
            Command::Get {
                key: b(b"k"),
                destination: Some(Destination::Stdout)
            }
        );
        assert_eq!(
            run(&["decr", "n", "-5"]),
            Command::Incr {
                key: b(b"n"),
                delta: 5
            }
        );
        assert_eq!(
            run(&["cas", "k", "0", "v", "--ttl", "9"]),
            Command::Cas {
                key: b(b"k"),
                expected_version: 0,
                value: b(b"v"),
                ttl_ms: Some(9),
            }
        );
        assert_eq!(
            run(&["exists", "a", "b"]),
            Command::Exists {
                keys: vec![b(b"a"), b(b"b")]
            }
        );
        assert_eq!(
            run(&["scan", "p:", "--count", "3"]),
            Command::Scan {
                prefix: b(b"p:"),
                count: 3
            }
        );
        assert_eq!(
            run(&["subscribe", "news", "--count", "2"]),
            Command::Subscribe {
                topic: b(b"news"),
                count: Some(2)
            }
        );
        assert_eq!(
            run(&["mset", "a", "1", "b", "2"]),
            Command::MSet {
                pairs: vec![(b(b"a"), b(b"1")), (b(b"b"), b(b"2"))]
            }
        );
        assert_eq!(
            run(&["expire", "k", "0"]),
            Command::Expire {
                key: b(b"k"),
                ttl_ms: 0
            }
        );
    }

    #[test]
    fn conflicts_and_bad_arguments_are_usage_errors_that_say_why() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["set", "a", "b", "--nx", "--xx"],
                "--nx and --xx cannot be given together",
            ),
            (
                &["set", "a", "b", "--ttl", "5", "--keepttl"],
                "--ttl and --keepttl cannot",
            ),
            (
                &["set", "a", "b", "--file", "x"],
                "give the value once: VALUE or --file PATH",
            ),
            (
                &["set", "a", "b", "--ttl", "1", "--ttl", "2"],
                "--ttl is given twice",
            ),
            (
                &["set", "a", "b", "--ttl", "-5"],
                "--ttl must be a whole number of milliseconds, 1 or more, not \"-5\"",
            ),
            (
                &["set", "a", "b", "--ttl", "0"],
                "--ttl must be 1 ms or more",
            ),
            (&["set", "a", "b", "--ttl"], "--ttl needs a value: --ttl MS"),
            (&["set", "a", "b", "--nx=1"], "--nx takes no value"),
            (
                &["set", "a", "b", "--bogus"],
                "unknown option --bogus (set takes --file, --ttl, --keepttl, --nx, --xx",
            ),
            (
                &["set", "a"],
                "set: wrong number of arguments (1 given); usage: set KEY (VALUE | --file PATH)",
            ),
            (
                &["set", "a", "b", "c"],
                "wrong number of arguments (3 given)",
            ),
            (
                &["get", "k", "--file", "a", "--output", "b"],
                "--file and --output cannot be given together",
            ),
            (
                &["get"],
                "get: wrong number of arguments (0 given); usage: get KEY [--file PATH]",
            ),
            (
                &["ping", "now"],
                "ping: wrong number of arguments (1 given)",
            ),
            (
                &["ping", "--ttl", "5"],
                "unknown option --ttl (ping takes no options",
            ),
            (&["incr", "n", "x"], "DELTA must be a whole number"),
            (&["decr", "n", "-9223372036854775808"], "cannot be negated"),
            (
                &["expire", "k", "-1"],
                "MS must be a whole number of milliseconds, 0 or more, not \"-1\"",
            ),
            (&["cas", "k", "v1", "x"], "VERSION must be a version number"),
            (
                &["mset", "a", "1", "b"],
                "mset: keys and values go in pairs (3 words given)",
            ),
            (&["scan", "--count", "0"], "--count must be 1 or more"),
            (
                &["subscribe", "t", "--count", "-1"],
                "--count must be a whole number, 1 or more",
            ),
            (&["set", r"a\q", "v"], "unknown escape \\q"),
            (&["frobnicate"], "unknown command \"frobnicate\""),
            (&["help", "frobnicate"], "unknown command \"frobnicate\""),
            (&["publish", "t", "--file", "-"], "name a file"),
        ];
        for (words, expected) in cases {
            let message = error(words);
            assert!(message.contains(expected), "{words:?}: {message}");
        }
    }

    #[test]
    fn help_is_printed_for_command_help_and_help_command() {
        for words in [
            &["get", "--help"][..],
            &["help", "get"],
            &["GET", "k", "--help"],
        ] {
            match parse(&argv(words), Input::FilesOnly) {
                Ok(Parsed::Help(text)) => {
                    assert!(text.starts_with("usage: get KEY [--file PATH]"), "{text}");
                    assert!(text.contains("Exit status 1"), "{text}");
                }
                other => panic!("{words:?}: {other:?}"),
            }
        }
        match parse(&argv(&["help"]), Input::FilesOnly) {
            Ok(Parsed::Help(text)) => assert!(text.contains("exists KEY..."), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
