//! The man page and the shell completions, generated from the option definitions in `cli`, so
//! they cannot drift from `--help`.
//!
//! The page is clap_mangen's NAME, DESCRIPTION and OPTIONS, a SYNOPSIS of our own (clap_mangen's
//! names no option values), `forkecho ping` as a section of its own, and the reference that no
//! option definition holds (EXIT STATUS, SIGNALS, LOGS, LIMITS, SANDBOX, ENVIRONMENT, FILES), kept
//! as text beside this file in `reference.txt` and rendered here, then the examples of `--help`.
//!
//! `reference.txt` is a small markup: `# NAME` begins a section; paragraphs are separated by a
//! blank line; a paragraph `- TERM :: TEXT` is a tagged paragraph; `` `code` `` is bold.

use std::fmt::Write as _;
use std::io::{self, Write};

use clap::{Arg, CommandFactory};
use clap_complete::Shell;

use super::options::Options;

/// The reference sections, rendered by `reference`.
const REFERENCE: &str = include_str!("reference.txt");

/// Writes the man page (see the module docs).
pub fn write_man(out: &mut impl Write) -> io::Result<()> {
    let command = Options::command();
    // The subcommands (ping, ctl), each rendered as a section of its own.
    let subcommands: Vec<(String, clap::Command)> = command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
        .map(|sub| {
            let name = format!("forkecho {}", sub.get_name());
            (name.clone(), sub.clone().bin_name(name))
        })
        .collect();
    let server = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    server.render_title(&mut page)?;
    server.render_name_section(&mut page)?;
    page.extend_from_slice(b".SH SYNOPSIS\n");
    page.extend_from_slice(synopsis("forkecho", &command).as_bytes());
    for (name, sub) in &subcommands {
        page.extend_from_slice(b".br\n");
        page.extend_from_slice(synopsis(name, sub).as_bytes());
    }
    server.render_description_section(&mut page)?;
    server.render_options_section(&mut page)?;
    for (name, sub) in subcommands {
        let _ = writeln!(page, ".SH \"{}\"", escape(&name.to_uppercase()));
        page.extend_from_slice(synopsis(&name, &sub).as_bytes());
        let sub_page = clap_mangen::Man::new(sub);
        let mut part = Vec::new();
        sub_page.render_description_section(&mut part)?;
        sub_page.render_options_section(&mut part)?;
        sub_page.render_extra_section(&mut part)?;
        // Its sections become subsections of this one.
        for line in part.split_inclusive(|&b| b == b'\n') {
            match line.strip_prefix(b".SH ") {
                Some(rest) => {
                    page.extend_from_slice(b".SS ");
                    page.extend_from_slice(rest);
                }
                None => page.extend_from_slice(line),
            }
        }
    }
    page.extend_from_slice(reference(REFERENCE).as_bytes());
    server.render_extra_section(&mut page)?;
    server.render_version_section(&mut page)?;
    page.extend_from_slice(b".SH \"SEE ALSO\"\nnc(1), socat(1), systemd.socket(5), inetd(8)\n");
    // clap_mangen calls the after-help text EXTRA; ours is the examples, which begins with its own
    // `Examples:` line: the heading says it already.
    let page = String::from_utf8_lossy(&page)
        .replace(".SH EXTRA\n", ".SH EXAMPLES\n")
        .replace(".SS EXTRA\n", ".SS EXAMPLES\n")
        .replace("EXAMPLES\nExamples:\n", "EXAMPLES\n");
    out.write_all(page.as_bytes())
}

/// One synopsis line: the command, then every option with its value's name, then the
/// positional arguments.
fn synopsis(name: &str, command: &clap::Command) -> String {
    let mut line = format!("\\fB{}\\fR", escape(name));
    let shown = || command.get_arguments().filter(|arg| !arg.is_hide_set());
    for arg in shown().filter(|arg| !arg.is_positional()) {
        let flags = [
            arg.get_short().map(|s| format!("\\fB\\-{s}\\fR")),
            arg.get_long()
                .map(|l| format!("\\fB\\-\\-{}\\fR", escape(l))),
        ];
        let flags: Vec<String> = flags.into_iter().flatten().collect();
        let _ = write!(line, " [{}{}]", flags.join("|"), value_of(arg));
    }
    for arg in shown().filter(|arg| arg.is_positional()) {
        let _ = write!(line, "{}", value_of(arg));
    }
    line.push('\n');
    line
}

/// ` \fIVALUE\fR` for an option that takes one (and a positional argument), nothing for a flag.
fn value_of(arg: &Arg) -> String {
    if !arg.get_action().takes_values() {
        return String::new();
    }
    let value = arg.get_value_names().map_or_else(
        || arg.get_id().as_str().to_uppercase(),
        |v| v[0].to_string(),
    );
    format!(" \\fI{}\\fR", escape(&value))
}

/// Renders `reference.txt`'s markup to roff (see the module docs).
fn reference(text: &str) -> String {
    let mut roff = String::new();
    for block in text.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
        if let Some(title) = block.strip_prefix("# ") {
            let _ = writeln!(roff, ".SH \"{}\"", escape(title));
            continue;
        }
        // A line `- TERM :: TEXT` begins a tagged paragraph; any other line goes on the last one.
        let mut items: Vec<String> = Vec::new();
        for line in block.lines().map(str::trim) {
            match items.last_mut() {
                Some(last) if !(line.starts_with("- ") && line.contains(" :: ")) => {
                    last.push(' ');
                    last.push_str(line);
                }
                _ => items.push(line.to_string()),
            }
        }
        for item in &items {
            match item.strip_prefix("- ").and_then(|i| i.split_once(" :: ")) {
                Some((term, body)) => {
                    let _ = writeln!(roff, ".TP\n\\fB{}\\fR\n{}", inline(term), inline(body));
                }
                None => {
                    let _ = writeln!(roff, ".PP\n{}", inline(item));
                }
            }
        }
    }
    roff
}

/// Escapes text for roff and sets `` `code` `` in bold.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        match i % 2 {
            1 => {
                let _ = write!(out, "\\fB{}\\fR", escape(part));
            }
            _ => out.push_str(&escape(part)),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// Backslashes and dashes, as roff wants them in running text.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// Writes the completion script for `shell`, generated from these options.
pub fn write_completions(shell: Shell, out: &mut impl Write) -> io::Result<()> {
    // Generated into memory first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Options::command(), "forkecho", &mut script);
    out.write_all(&script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_markup_renders_to_roff() {
        let roff = reference(
            "# EXIT STATUS\n\n- 0 :: Stopped by `SIGTERM`.\n- 1 :: Could\n  not start.\n\n\
             A paragraph with --grace and a-b.\n\n.dot first",
        );
        assert_eq!(
            roff,
            ".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\nStopped by \\fBSIGTERM\\fR.\n\
             .TP\n\\fB1\\fR\nCould not start.\n.PP\nA paragraph with \\-\\-grace and a\\-b.\n\
             .PP\n\\&.dot first\n"
        );
    }

    #[test]
    fn the_synopsis_names_every_value() {
        let command = Options::command();
        let line = synopsis("forkecho", &command);
        assert!(
            line.contains("[\\fB\\-p\\fR|\\fB\\-\\-port\\fR \\fIPORT\\fR]"),
            "{line}"
        );
        assert!(line.contains("[\\fB\\-\\-reuse\\-port\\fR]"), "{line}");
        assert!(
            line.contains("[\\fB\\-\\-delay\\fR \\fIMS[:JITTER]\\fR]"),
            "{line}"
        );
        let ping = command.find_subcommand("ping").unwrap();
        assert!(synopsis("forkecho ping", ping).contains(" \\fIHOST:PORT\\fR"));
    }

    #[test]
    fn every_reference_section_is_there() {
        let mut page = Vec::new();
        write_man(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for section in [
            "OPTIONS",
            "\"EXIT STATUS\"",
            "\"SIGNALS\"",
            "\"LOGS\"",
            "\"LIMITS\"",
            "\"SANDBOX\"",
            "\"ENVIRONMENT\"",
            "\"FILES\"",
            "EXAMPLES",
        ] {
            assert!(page.contains(&format!("\n.SH {section}\n")), "no {section}");
        }
        assert!(!page.contains("Examples:"), "a second Examples heading");
    }
}
