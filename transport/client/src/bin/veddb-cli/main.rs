//! `veddb-cli`: the command-line client of VedDB, like `redis-cli`.
//!
//! `veddb-cli [--grpc HOST:PORT | --local NAME] [OPTIONS] COMMAND [ARGUMENTS]` runs one command;
//! without a command it opens a prompt (line editing, history, completion: see [`prompt`]).
//! Keys and values are bytes: typed with escapes ([`words`]), shown escaped, as bytes
//! (`--raw`) or as JSON (`--json`) ([`output`]), or moved through files (`--file`). The commands
//! and their usage are one table ([`commands::SPECS`]); `--repeat`/`--interval` repeat a
//! command and `--latency` measures PING round trips ([`latency`]).
//!
//! Exit status: 0 success; 1 a negative answer (not found, not stored, none existed); 2 a
//! usage error, or a file that cannot be read or written; 3 the server refused (its message is
//! printed) or the connection broke; 4 cannot connect; 130 stopped by Ctrl-C; 141 standard
//! output was closed (a reader such as `head` went away), quietly.
#![forbid(unsafe_code)]

mod commands;
mod interrupt;
mod latency;
mod output;
mod prompt;
mod words;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use veddb_client::{Client, ClientError};

use commands::{Command, Input, Parsed};
use interrupt::Interrupt;
use output::{Format, Out};
use words::{show, Word};

/// The gRPC address when neither `--grpc` nor `--local` is given.
const GRPC_DEFAULT: &str = "127.0.0.1:50051";

/// How a command ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Done,
    /// A negative answer: exit status 1.
    Negative,
    /// Stopped by Ctrl-C: exit status 130 (at the prompt: back to the prompt).
    Interrupted,
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// A usage error (exit status 2).
    Usage(String),
    /// A file, standard input or standard output that cannot be read or written (exit status 2).
    Io(String),
    /// The server refused, or the connection broke (exit status 3).
    Refused(ClientError),
    /// Standard output was closed by its reader: exit quietly (status 141, as SIGPIPE would).
    ClosedPipe,
}

impl Failure {
    /// The message to print (empty for a closed pipe).
    pub fn message(&self) -> String {
        match self {
            Failure::Usage(message) => format!("usage: {message}"),
            Failure::Io(message) => message.clone(),
            Failure::Refused(error) => error.to_string(),
            Failure::ClosedPipe => String::new(),
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) | Failure::Io(_) => 2,
            Failure::Refused(_) => 3,
            Failure::ClosedPipe => EXIT_CLOSED_PIPE,
        }
    }
}

const EXIT_CANNOT_CONNECT: u8 = 4;
const EXIT_INTERRUPTED: u8 = 130;
const EXIT_CLOSED_PIPE: u8 = 141;

/// A line on standard error (a note or an error). A closed standard error is ignored: there
/// is nowhere else to say anything.
pub fn note(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.write_all(b"\n");
}

/// Where the client connects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Grpc(String),
    Local(String),
}

impl Target {
    /// As the prompt shows it.
    fn name(&self) -> String {
        match self {
            Target::Grpc(address) => address.clone(),
            Target::Local(name) => format!("local:{name}"),
        }
    }

    fn connect(&self) -> Result<Client, String> {
        match self {
            Target::Grpc(address) => Client::connect_grpc(address).map_err(|error| {
                format!(
                    "cannot connect to {address}: {error} (is veddb-server running with \
                     --port {}?)",
                    address.rsplit(':').next().unwrap_or("PORT")
                )
            }),
            Target::Local(name) => Client::connect_local(name).map_err(|error| {
                format!(
                    "cannot attach to the local instance {name}: {error} (is veddb-server \
                     running with --create --name {name}?)"
                )
            }),
        }
    }
}

/// How many times `--repeat` runs the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    Times(u64),
    /// `--repeat -1`: until Ctrl-C.
    Forever,
}

/// The options before the command, and the command's words.
#[derive(Debug)]
struct Options {
    target: Target,
    format: Format,
    repeat: Option<Repeat>,
    interval: Option<Duration>,
    latency: bool,
    words: Vec<Word>,
}

/// What the command line asks for.
#[derive(Debug)]
enum Invocation {
    Run(Options),
    Help(String),
    Version,
}

/// `veddb-cli --help`.
fn program_help() -> String {
    format!(
        "veddb-cli: the command-line client of VedDB.

usage: veddb-cli [--grpc HOST:PORT | --local NAME] [OPTIONS] [COMMAND [ARGUMENTS]]
       veddb-cli COMMAND --help

Without a command: a prompt (line editing, history in ~/{history} or ${variable}, Tab
completes command names, help, quit or Ctrl-D leaves, Ctrl-C stops a subscribe).

Options (before the command):
  --grpc HOST:PORT  the server's gRPC address (default {GRPC_DEFAULT})
  --local NAME      attach to the local instance NAME through shared memory
                    (veddb-server --create --name NAME, same machine)
  --raw             for scripts: each value as its bytes, then a newline; numbers plain
  --json            one JSON document per line (bytes that are not UTF-8: {{\"base64\": ...}})
  --repeat N        run the command N times (-1: until Ctrl-C); -r N is the same
  --interval S      seconds between runs of --repeat, or between PINGs of --latency
                    (decimals allowed: 0.1); -i S is the same
  --latency         measure PING round trips one after another and show min, p50, p99 and max
                    live until Ctrl-C (or --repeat N samples; PINGs {latency_ms} ms apart
                    unless --interval)
  --literal         take the command's arguments as they are (no backslash escapes)
  -h, --help        this help (COMMAND --help: that command's)
  --version         the version

Commands:
{commands}
Arguments are bytes: on the command line, backslash escapes apply to keys, values, topics
and messages: \\xHH (any byte), \\n \\r \\t \\a \\b \\\\ \\\" \\'. At the prompt, \"...\" takes
the same escapes and '...' takes everything as it is. A value that starts with -- goes
after --, as in: set KEY -- --value. Values are shown in double quotes with the same
escapes (so they can be typed back), as bytes with --raw, or as JSON with --json.

Exit status: 0 success; 1 a negative answer (not found, not stored, none existed);
2 a usage error, or a file that cannot be read or written; 3 the server refused (its
message is printed) or the connection broke; 4 cannot connect; 130 stopped by Ctrl-C;
141 standard output was closed by its reader (as `| head`), quietly.
",
        history = prompt::HISTORY_FILE,
        variable = prompt::HISTORY_VARIABLE,
        latency_ms = latency::INTERVAL_DEFAULT.as_millis(),
        commands = commands::command_list(),
    )
}

/// Parses the command line (without the program name).
fn parse_arguments(arguments: Vec<OsString>) -> Result<Invocation, String> {
    let mut grpc = None;
    let mut local = None;
    let mut raw = false;
    let mut json = false;
    let mut repeat = None;
    let mut interval = None;
    let mut latency = false;
    let mut literal = false;
    let mut arguments = arguments.into_iter().peekable();
    // Each option once; `value` takes the option's value (glued with = or the next argument).
    fn once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), String> {
        if slot.is_some() {
            return Err(format!("{name} is given twice"));
        }
        *slot = Some(value);
        Ok(())
    }
    while let Some(argument) = arguments.peek() {
        let Some(text) = argument.to_str() else {
            break;
        };
        if !text.starts_with('-') || text == "-" {
            break;
        }
        let text = text.to_string();
        arguments.next();
        if text == "--" {
            break;
        }
        let (name, glued) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_string(), Some(value.to_string()))
            }
            _ => (text.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            if let Some(value) = glued.clone() {
                return Ok(value);
            }
            match arguments.next() {
                Some(value) => value
                    .into_string()
                    .map_err(|_| format!("{name} {what}: the value is not valid text")),
                None => Err(format!("{name} needs a value: {name} {what}")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Invocation::Help(program_help())),
            "--version" => return Ok(Invocation::Version),
            "--grpc" => once(&mut grpc, "--grpc", value("HOST:PORT")?)?,
            "--local" => once(&mut local, "--local", value("NAME")?)?,
            "-r" | "--repeat" => {
                let text = value("N")?;
                let parsed = match text.parse::<i64>() {
                    Ok(-1) => Repeat::Forever,
                    Ok(n) if n >= 1 => Repeat::Times(n as u64),
                    _ => {
                        return Err(format!(
                            "--repeat must be a whole number, 1 or more (or -1: until Ctrl-C), \
                             not {text:?}"
                        ))
                    }
                };
                once(&mut repeat, "--repeat", parsed)?;
            }
            "-i" | "--interval" => {
                let text = value("S")?;
                let seconds = text
                    .parse::<f64>()
                    .ok()
                    .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                    .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                    .filter(|interval| *interval <= commands::INTERVAL_MAX)
                    .ok_or_else(|| {
                        format!(
                            "--interval must be a number of seconds from 0 to {} (decimals \
                             allowed: 0.1), not {text:?}",
                            commands::INTERVAL_MAX.as_secs()
                        )
                    })?;
                once(&mut interval, "--interval", seconds)?;
            }
            flag @ ("--raw" | "--json" | "--latency" | "--literal") => {
                if glued.is_some() {
                    return Err(format!("{flag} takes no value"));
                }
                let slot = match flag {
                    "--raw" => &mut raw,
                    "--json" => &mut json,
                    "--latency" => &mut latency,
                    _ => &mut literal,
                };
                if *slot {
                    return Err(format!("{flag} is given twice"));
                }
                *slot = true;
            }
            other => {
                return Err(format!(
                    "unknown option {other}; options go before the command (see veddb-cli --help)"
                ))
            }
        }
    }
    let words: Vec<Word> = arguments
        .map(|argument| Word::argument(argument, literal))
        .collect();
    // Conflicts between the options, each a usage error.
    let target = match (grpc, local) {
        (Some(_), Some(_)) => {
            return Err("--grpc and --local name two targets; give one".into());
        }
        (Some(address), None) => Target::Grpc(address),
        (None, Some(name)) => Target::Local(name),
        (None, None) => Target::Grpc(GRPC_DEFAULT.into()),
    };
    let format = match (raw, json) {
        (true, true) => return Err("--raw and --json are two output formats; give one".into()),
        (true, false) => Format::Raw,
        (false, true) => Format::Json,
        (false, false) => Format::Human,
    };
    if latency && !words.is_empty() {
        return Err(format!(
            "--latency measures PING round trips and takes no command ({} given)",
            show(words[0].raw())
        ));
    }
    if !latency && words.is_empty() {
        if repeat.is_some() || interval.is_some() {
            return Err(
                "--repeat and --interval need a command (the prompt runs each line once)".into(),
            );
        }
        if literal {
            return Err(
                "--literal applies to a command's arguments; the prompt reads quoted words".into(),
            );
        }
    }
    if !latency && interval.is_some() && repeat.is_none() {
        return Err("--interval needs --repeat N (the pause between runs)".into());
    }
    Ok(Invocation::Run(Options {
        target,
        format,
        repeat,
        interval,
        latency,
        words,
    }))
}

/// The exit status of a command that ended.
fn exit(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Negative => ExitCode::from(1),
        Outcome::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
    }
}

/// The exit status of a failure, its message printed.
fn fail(failure: Failure) -> ExitCode {
    if !matches!(failure, Failure::ClosedPipe) {
        note(&format!("veddb-cli: {}", failure.message()));
    }
    ExitCode::from(failure.exit_code())
}

/// Writes a help text to standard output.
fn print(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(Failure::from(error)),
    }
}

/// Runs the command `repeat` times (once without `--repeat`), `interval` apart. A refusal
/// stops the runs; the exit status is the last run's.
fn run_repeated(
    client: &Client,
    command: &Command,
    out: &mut Out,
    repeat: Option<Repeat>,
    interval: Option<Duration>,
    interrupt: &Interrupt,
) -> Result<Outcome, Failure> {
    let mut runs = 0u64;
    loop {
        let outcome = commands::execute(client, command, out, interrupt)?;
        out.flush()?;
        runs += 1;
        let done = match repeat {
            None => true,
            Some(Repeat::Times(times)) => runs >= times,
            Some(Repeat::Forever) => false,
        };
        if done || outcome == Outcome::Interrupted {
            return Ok(outcome);
        }
        let stopped = match interval {
            Some(interval) => interrupt.sleep(interval),
            None => interrupt.take(),
        };
        if stopped {
            return Ok(Outcome::Interrupted);
        }
    }
}

fn main() -> ExitCode {
    let options = match parse_arguments(std::env::args_os().skip(1).collect()) {
        Ok(Invocation::Run(options)) => options,
        Ok(Invocation::Help(text)) => return print(&text),
        Ok(Invocation::Version) => {
            return print(&format!("veddb-cli {}\n", env!("CARGO_PKG_VERSION")))
        }
        Err(message) => return fail(Failure::Usage(message)),
    };
    let mut out = Out::new(options.format);
    // `help` on the command line needs no server.
    if let Some(first) = options.words.first() {
        if first
            .text()
            .is_some_and(|name| name.eq_ignore_ascii_case("help"))
            && options.words.len() == 1
        {
            return print(&program_help());
        }
    }
    let command = if options.words.is_empty() {
        None
    } else {
        match commands::parse(&options.words, Input::FilesAndStdin) {
            Ok(Parsed::Run(command)) => match command.check_format(options.format) {
                Ok(()) => Some(command),
                Err(message) => return fail(Failure::Usage(message)),
            },
            Ok(Parsed::Help(text)) => return print(&text),
            Err(message) => return fail(Failure::Usage(message)),
        }
    };
    if let Some(command) = &command {
        if command.runs_until_stopped() && options.repeat.is_some() {
            return fail(Failure::Usage(
                "--repeat does not apply to subscribe, which runs until stopped".into(),
            ));
        }
    }
    let client = match options.target.connect() {
        Ok(client) => client,
        Err(message) => {
            note(&format!("veddb-cli: {message}"));
            return ExitCode::from(EXIT_CANNOT_CONNECT);
        }
    };
    let result = if options.latency {
        let samples_max = match options.repeat {
            Some(Repeat::Times(times)) => Some(times),
            Some(Repeat::Forever) | None => None,
        };
        latency::run(
            &client,
            &mut out,
            options.interval.unwrap_or(latency::INTERVAL_DEFAULT),
            samples_max,
            &Interrupt::catch(),
        )
    } else if let Some(command) = command {
        // Ctrl-C stops what runs until stopped; anything else keeps Ctrl-C's default action.
        let interrupt = if command.runs_until_stopped() || options.repeat.is_some() {
            Interrupt::catch()
        } else {
            Interrupt::never()
        };
        run_repeated(
            &client,
            &command,
            &mut out,
            options.repeat,
            options.interval,
            &interrupt,
        )
    } else {
        prompt::run(&client, &options.target.name(), &mut out).map(|()| Outcome::Done)
    };
    let result = result.and_then(|outcome| out.flush().map(|()| outcome));
    match result {
        Ok(outcome) => exit(outcome),
        Err(failure) => fail(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Invocation, String> {
        parse_arguments(words.iter().map(OsString::from).collect())
    }

    fn options(words: &[&str]) -> Options {
        match parse(words) {
            Ok(Invocation::Run(options)) => options,
            other => panic!("{words:?}: {other:?}"),
        }
    }

    #[test]
    fn global_options_come_before_the_command() {
        let parsed = options(&[
            "--grpc", "h:1", "--raw", "-r", "3", "-i", "0.5", "get", "k", "--raw",
        ]);
        assert_eq!(parsed.target, Target::Grpc("h:1".into()));
        assert_eq!(parsed.format, Format::Raw);
        assert_eq!(parsed.repeat, Some(Repeat::Times(3)));
        assert_eq!(parsed.interval, Some(Duration::from_millis(500)));
        // After the command, words are the command's.
        let words: Vec<&[u8]> = parsed.words.iter().map(Word::raw).collect();
        assert_eq!(words, [&b"get"[..], b"k", b"--raw"]);
        let parsed = options(&["--local=main", "--json", "--repeat=-1", "incr", "n"]);
        assert_eq!(parsed.target, Target::Local("main".into()));
        assert_eq!(parsed.format, Format::Json);
        assert_eq!(parsed.repeat, Some(Repeat::Forever));
        assert_eq!(options(&[]).target, Target::Grpc(GRPC_DEFAULT.into()));
        assert!(options(&["--latency", "--interval", "0"]).latency);
        assert!(matches!(parse(&["--help"]), Ok(Invocation::Help(_))));
        assert!(matches!(parse(&["--version"]), Ok(Invocation::Version)));
    }

    #[test]
    fn option_conflicts_are_usage_errors_that_say_why() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--grpc", "a:1", "--local", "x", "ping"],
                "--grpc and --local name two targets",
            ),
            (
                &["--raw", "--json", "ping"],
                "--raw and --json are two output formats",
            ),
            (
                &["--latency", "ping"],
                "--latency measures PING round trips and takes no command",
            ),
            (&["--repeat", "3"], "--repeat and --interval need a command"),
            (&["--interval", "1", "ping"], "--interval needs --repeat N"),
            (&["--literal"], "--literal applies to a command's arguments"),
            (
                &["--repeat", "0", "ping"],
                "--repeat must be a whole number, 1 or more",
            ),
            (&["--repeat", "-2", "ping"], "--repeat must be"),
            (
                &["--interval", "-1", "--repeat", "2", "ping"],
                "--interval must be a number of seconds",
            ),
            (
                &["--interval", "NaN", "--repeat", "2", "ping"],
                "--interval must be",
            ),
            (&["--raw", "--raw", "ping"], "--raw is given twice"),
            (
                &["--grpc", "a:1", "--grpc", "b:2", "ping"],
                "--grpc is given twice",
            ),
            (&["--grpc"], "--grpc needs a value: --grpc HOST:PORT"),
            (&["--raw=1", "ping"], "--raw takes no value"),
            (
                &["--frobnicate", "ping"],
                "unknown option --frobnicate; options go before the command",
            ),
        ];
        for (words, expected) in cases {
            match parse(words) {
                Err(message) => assert!(message.contains(expected), "{words:?}: {message}"),
                other => panic!("{words:?} should be refused: {other:?}"),
            }
        }
    }

    #[test]
    fn literal_keeps_backslashes() {
        let parsed = options(&["--literal", "set", r"a\x00", r"C:\dir"]);
        assert_eq!(parsed.words[1].data().unwrap(), br"a\x00");
        assert_eq!(parsed.words[2].data().unwrap(), br"C:\dir");
        let parsed = options(&["set", r"a\x00", "v"]);
        assert_eq!(parsed.words[1].data().unwrap(), b"a\x00");
    }

    #[test]
    fn program_help_lists_every_command() {
        let help = program_help();
        for spec in commands::SPECS {
            assert!(help.contains(&spec.usage()), "{}", spec.name);
        }
        assert!(help.contains("Exit status"));
    }
}
