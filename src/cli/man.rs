//! The man page and the shell completions, generated from the option definitions in `cli`, so
//! they cannot drift from `--help`.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;

use super::Options;

/// Writes the man page, generated from these options: the server's sections, then `forkecho
/// ping` in a section of its own (one page documents the whole binary), then the examples.
pub fn write_man(out: &mut impl Write) -> io::Result<()> {
    let command = Options::command();
    let ping = command
        .find_subcommand("ping")
        .expect("the ping subcommand")
        .clone()
        .bin_name("forkecho ping");
    let server = clap_mangen::Man::new(command);
    let mut page = Vec::new();
    server.render_title(&mut page)?;
    server.render_name_section(&mut page)?;
    server.render_synopsis_section(&mut page)?;
    server.render_description_section(&mut page)?;
    server.render_options_section(&mut page)?;
    page.extend_from_slice(b".SH \"FORKECHO PING\"\n");
    let ping = clap_mangen::Man::new(ping);
    let mut part = Vec::new();
    ping.render_synopsis_section(&mut part)?;
    ping.render_description_section(&mut part)?;
    ping.render_options_section(&mut part)?;
    ping.render_extra_section(&mut part)?;
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
    server.render_extra_section(&mut page)?;
    server.render_version_section(&mut page)?;
    // clap_mangen calls the after-help text EXTRA; ours is examples.
    let page = String::from_utf8_lossy(&page)
        .replace(".SH EXTRA\n", ".SH EXAMPLES\n")
        .replace(".SS EXTRA\n", ".SS EXAMPLES\n");
    out.write_all(page.as_bytes())
}

/// Writes the completion script for `shell`, generated from these options.
pub fn write_completions(shell: Shell, out: &mut impl Write) -> io::Result<()> {
    // Generated into memory first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Options::command(), "forkecho", &mut script);
    out.write_all(&script)
}
