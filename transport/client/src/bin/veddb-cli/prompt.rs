//! The prompt: `veddb-cli` with no command. On a terminal: line editing, history kept in a
//! file, Tab completion of command names, the usage of the command being typed as a hint, and
//! the target in the prompt (rustyline). Otherwise (commands piped in): one command per line,
//! no prompt. Either way errors are printed and the prompt goes on.

use std::borrow::Cow;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::{Hint, Hinter};
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, Helper};
use veddb_client::Client;

use crate::commands::{self, Input, Parsed, PROMPT_WORDS, SPECS};
use crate::interrupt::Interrupt;
use crate::output::Out;
use crate::words::split_line;
use crate::{note, Failure, Outcome};

/// The environment variable that names the history file (empty: keep no history).
pub const HISTORY_VARIABLE: &str = "VEDDB_HISTFILE";
/// The history file in the home directory when the variable is not set.
pub const HISTORY_FILE: &str = ".veddb_history";
/// Lines the history keeps.
const HISTORY_LINES_MAX: usize = 1000;

/// The history file: `$VEDDB_HISTFILE`, else `.veddb_history` in the home directory; `None`
/// when the variable is empty or there is no home directory.
pub fn history_path() -> Option<PathBuf> {
    match std::env::var_os(HISTORY_VARIABLE) {
        Some(path) if path.is_empty() => None,
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::home_dir().map(|home| home.join(HISTORY_FILE)),
    }
}

/// Runs the prompt until `quit`, `exit`, Ctrl-D or the end of input. A closed standard output
/// ends it with [`Failure::ClosedPipe`].
pub fn run(client: &Client, target: &str, out: &mut Out) -> Result<(), Failure> {
    let interrupt = Interrupt::catch();
    if std::io::stdin().is_terminal() {
        terminal(client, target, out, &interrupt)
    } else {
        piped(client, out, &interrupt)
    }
}

/// What one line of the prompt asks for.
enum Step {
    Continue,
    Quit,
}

/// Runs one line: a command, `help`, `quit`. Errors are printed; only a closed standard output
/// stops the prompt.
fn line(
    client: &Client,
    line: &[u8],
    out: &mut Out,
    interrupt: &Interrupt,
) -> Result<Step, Failure> {
    let words = match split_line(line) {
        Ok(words) => words,
        Err(error) => {
            note(&format!("(error) {error}"));
            return Ok(Step::Continue);
        }
    };
    let Some(first) = words.first() else {
        return Ok(Step::Continue);
    };
    if words.len() == 1 {
        if let Some(word) = first.text() {
            if PROMPT_WORDS
                .iter()
                .any(|quit| quit.eq_ignore_ascii_case(word))
            {
                return Ok(Step::Quit);
            }
        }
    }
    let command = match commands::parse(&words, Input::FilesOnly).and_then(|parsed| match parsed {
        Parsed::Run(command) => command
            .check_format(out.format)
            .map(|()| Parsed::Run(command)),
        help => Ok(help),
    }) {
        Ok(Parsed::Run(command)) => command,
        Ok(Parsed::Help(text)) => {
            out.bytes(text.as_bytes())?;
            out.flush()?;
            return Ok(Step::Continue);
        }
        Err(error) => {
            note(&format!("(error) {error}"));
            return Ok(Step::Continue);
        }
    };
    // A Ctrl-C pressed before this command (or during the last one, unnoticed) is forgotten.
    interrupt.clear();
    let result = commands::execute(client, &command, out, interrupt);
    out.flush()?;
    match result {
        Ok(Outcome::Done | Outcome::Negative | Outcome::Interrupted) => Ok(Step::Continue),
        Err(Failure::ClosedPipe) => Err(Failure::ClosedPipe),
        Err(failure) => {
            note(&format!("(error) {}", failure.message()));
            Ok(Step::Continue)
        }
    }
}

/// Commands from a pipe or a file: one per line, bytes as they are.
fn piped(client: &Client, out: &mut Out, interrupt: &Interrupt) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match stdin.read_until(b'\n', &mut buffer) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) => {
                note(&format!("cannot read standard input: {error}"));
                return Ok(());
            }
        }
        if let Step::Quit = line(client, &buffer, out, interrupt)? {
            return Ok(());
        }
    }
}

/// The prompt on a terminal.
fn terminal(
    client: &Client,
    target: &str,
    out: &mut Out,
    interrupt: &Interrupt,
) -> Result<(), Failure> {
    let config = Config::builder()
        .max_history_size(HISTORY_LINES_MAX)
        .and_then(|builder| builder.history_ignore_dups(true))
        .map(|builder| builder.auto_add_history(false).build())
        .unwrap_or_default();
    let mut editor: Editor<PromptHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(error) => {
            note(&format!(
                "cannot set up line editing ({error}); reading plain lines"
            ));
            return piped(client, out, interrupt);
        }
    };
    editor.set_helper(Some(PromptHelper));
    let history = history_path();
    if let Some(path) = &history {
        match editor.load_history(path) {
            Ok(()) => {}
            Err(ReadlineError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => note(&format!(
                "cannot read the history file {}: {error}",
                path.display()
            )),
        }
    }
    note(&format!(
        "connected to {target}; help lists the commands, quit or Ctrl-D leaves"
    ));
    let prompt = format!("{target}> ");
    let mut history_warned = false;
    loop {
        let typed = match editor.readline(&prompt) {
            Ok(typed) => typed,
            // Ctrl-C at the prompt drops the line being typed.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(()),
            Err(error) => {
                note(&format!("cannot read the terminal: {error}"));
                return Ok(());
            }
        };
        // Several lines pasted at once arrive as one text: each runs as its own command.
        for typed in typed.split(['\n', '\r']) {
            if typed.trim().is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(typed);
            if let Some(path) = &history {
                // Appended after every line, so that a prompt that is killed keeps its lines.
                if let Err(error) = editor.append_history(path) {
                    if !history_warned {
                        note(&format!(
                            "cannot write the history file {}: {error} (set {HISTORY_VARIABLE} \
                             to another file, or to nothing to keep no history)",
                            path.display()
                        ));
                        history_warned = true;
                    }
                }
            }
            if let Step::Quit = line(client, typed.as_bytes(), out, interrupt)? {
                return Ok(());
            }
        }
    }
}

/// Completion of command names, hints of their usage.
struct PromptHelper;

/// The usage of the command being typed, shown after the cursor (never inserted).
struct UsageHint(String);

impl Hint for UsageHint {
    fn display(&self) -> &str {
        &self.0
    }

    fn completion(&self) -> Option<&str> {
        None
    }
}

/// The command names (and `help`'s argument) that start with `prefix`, any case.
fn candidates(prefix: &str) -> Vec<String> {
    let lower = prefix.to_ascii_lowercase();
    SPECS
        .iter()
        .map(|spec| spec.name)
        .chain(PROMPT_WORDS.iter().copied())
        .filter(|name| name.starts_with(&lower))
        .map(|name| format!("{name} "))
        .collect()
}

impl Completer for PromptHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        position: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..position];
        let start = before
            .rfind(char::is_whitespace)
            .map_or(0, |space| space + 1);
        let earlier: Vec<&str> = before[..start].split_whitespace().collect();
        let words = match earlier.as_slice() {
            // The command name.
            [] => candidates(&before[start..]),
            // `help`'s command.
            [help] if help.eq_ignore_ascii_case("help") => candidates(&before[start..])
                .into_iter()
                .filter(|name| !PROMPT_WORDS.contains(&name.trim_end()))
                .collect(),
            _ => Vec::new(),
        };
        Ok((start, words))
    }
}

impl Hinter for PromptHelper {
    type Hint = UsageHint;

    fn hint(&self, line: &str, position: usize, _: &Context<'_>) -> Option<UsageHint> {
        // Only after `NAME ` with nothing typed yet for its arguments.
        if position != line.len() {
            return None;
        }
        let name = line.strip_suffix(' ')?;
        if name.contains(char::is_whitespace) {
            return None;
        }
        let spec = commands::spec(name)?;
        (!spec.arguments.is_empty()).then(|| UsageHint(spec.arguments.to_string()))
    }
}

impl Highlighter for PromptHelper {
    /// Hints in grey, so that they do not look typed.
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[90m{hint}\x1b[0m"))
    }
}

impl Validator for PromptHelper {}

impl Helper for PromptHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_offers_command_names_and_help_topics() {
        let history = DefaultHistory::new();
        let context = Context::new(&history);
        let complete = |line: &str| PromptHelper.complete(line, line.len(), &context).unwrap();
        assert_eq!(complete("sub"), (0, vec!["subscribe ".to_string()]));
        assert_eq!(complete("SU"), (0, vec!["subscribe ".to_string()]));
        assert_eq!(
            complete("s"),
            (
                0,
                vec![
                    "set ".into(),
                    "scan ".into(),
                    "subscribe ".into(),
                    "snapshot ".into()
                ]
            )
        );
        assert_eq!(
            complete("help ex"),
            (5, vec!["exists ".to_string(), "expire ".into()])
        );
        assert_eq!(complete("help q"), (5, Vec::new()));
        assert_eq!(complete("get ke"), (4, Vec::new()));
    }

    #[test]
    fn the_hint_is_the_usage_of_the_command_typed() {
        let history = DefaultHistory::new();
        let context = Context::new(&history);
        let hint = |line: &str| {
            PromptHelper
                .hint(line, line.len(), &context)
                .map(|hint| hint.0)
        };
        assert_eq!(
            hint("set ").as_deref(),
            Some("KEY (VALUE | --file PATH) [--ttl MS | --keepttl] [--nx | --xx]")
        );
        assert_eq!(hint("GET ").as_deref(), Some("KEY [--file PATH]"));
        assert_eq!(hint("get"), None);
        assert_eq!(hint("get k "), None);
        assert_eq!(hint("ping "), None);
        assert_eq!(hint("bogus "), None);
    }
}
