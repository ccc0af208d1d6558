//! `forkecho` serving, from start to exit: the table of contents of the server.
//!
//! Set up (the listening sockets, the log) → build the parent (signals, reaper, tables: every
//! step that can fail) → drop privileges → install the sandbox (`sandbox`) → announce
//! readiness → serve until a stop signal → shut down. Nothing that can fail comes after the
//! readiness line: once a harness has read it, only a stop signal ends the server.

use std::io;
use std::time::Instant;

use anyhow::Result;

use crate::log::logln;
use crate::log::{Quoted, Secs};
use crate::nowait;
use crate::parent::Parent;
use crate::settings::Settings;
use crate::setup;

/// Runs the server; errors are setup failures only.
pub fn run(settings: &Settings) -> Result<()> {
    let started = Instant::now();
    // Before anything is bound: a certificate that cannot be made or read stops the start here.
    let mut settings = settings.clone();
    if let Some(tls) = &settings.setup.tls {
        settings.child.tls = Some(setup::certificates::prepare(
            tls,
            &settings.setup.binds,
            true,
        )?);
    }
    if settings.child.websocket.is_some() {
        crate::child::websocket::warm();
    }
    let mut listening = setup::listen(&settings.setup)?;
    // After `listen`, which closes every descriptor a launcher left.
    if let Some(path) = &settings.setup.tls_keylog {
        crate::tls::log_keys_to(setup::dump::open_keylog(path)?);
    }
    if let Some((dir, limit)) = &settings.setup.dump {
        let dump = setup::dump::prepare(dir, *limit)?;
        settings.child.dump = Some(dump);
        if let Some(udp) = &mut settings.parent.udp {
            udp.dump = Some(dump);
        }
    }
    let settings = &settings;
    let from_systemd = listening.from_systemd;
    let identity = listening.identity.take();
    // What needs privilege is opened before the privileges go: the parent's OOM score file, then
    // stdout's own non-blocking description (held only until the readiness line is out).
    let (ours, template) = (&settings.parent, settings.child);
    let mut parent = Parent::new(listening, ours, template, settings.sandbox, started)?;
    let stdout = nowait::Target::open(1, "stdout");
    // On fd 1 itself: a harness that counts descriptors at the readiness line counts none extra.
    let stdout = (stdout.0.in_place(), stdout.1);
    setup::drop_privileges(identity.as_ref())?;
    if let (Some(dump), Some((dir, _))) = (settings.child.dump, &settings.setup.dump) {
        setup::dump::check(dump, dir)?;
    }
    // The last steps that can fail: the port file (written under a temporary name) and the
    // sandbox. A start that fails here leaves no port file behind.
    if let Err(err) = parent.prepare_to_announce() {
        parent.unannounce();
        return Err(err);
    }
    announce(&mut parent, settings, from_systemd, stdout);
    if let Some(identity) = &identity {
        logln!("privileges dropped {}", identity.description);
    }
    let stop = crate::memory::from_page_top(|| parent.serve());
    parent.shutdown(stop);
    Ok(())
}

/// The addresses listened on, as the readiness line shows them: separated by spaces.
struct Addrs<'a>(&'a Parent);

impl std::fmt::Display for Addrs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, addr) in self.0.addrs().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

/// The readiness line on stdout (the only thing forkecho ever writes there, in one write so a
/// program that spawned us on port 0 can read the port), the startup line on stderr, and then
/// stdout goes where stdin already points, to /dev/null: a harness reading stdout to its end gets
/// there now, not when the last child exits, and no child holds the launcher's pipe. The line is
/// written without waiting (`nowait`): a stdout that is full, closed or stopped costs a warning,
/// never serving or stopping.
fn announce(
    parent: &mut Parent,
    settings: &Settings,
    from_systemd: bool,
    (stdout, warning): (nowait::Target, Option<String>),
) {
    let addr = Addrs(parent).to_string();
    if let Some(why) = warning {
        logln!("warning: the listening line may wait for whoever reads stdout: {why}");
    }
    // With --udp, a second line names the UDP sockets; with --udp-only, it is the only one.
    // With --metrics, a last line names where scrapes are served (port 0 picks the port).
    let udp: Vec<String> = parent.udp_addrs().map(|a| a.to_string()).collect();
    let udp = (!udp.is_empty()).then(|| format!("udp {}", udp.join(" ")));
    let metrics = parent
        .metrics_addr()
        .map(|addr| format!("http://{addr}/metrics"));
    let mut line: String = [Some(addr.clone()).filter(|a| !a.is_empty()), udp.clone()]
        .into_iter()
        .flatten()
        .map(|addrs| format!("listening on {addrs}\n"))
        .collect();
    if let Some(url) = &metrics {
        line.push_str(&format!("metrics on {url}\n"));
    }
    parent.announce(&line);
    if !stdout.write(line.as_bytes()) {
        logln!(
            "warning: unable to write the listening line to stdout without waiting (nobody \
             reads it, or it is closed): serving all the same"
        );
    }
    stdout.close();
    // A passed socket comes bound and listening: --port, --bind and --backlog did not apply.
    let (origin, backlog) = match from_systemd {
        true => (" from=systemd", "unit".to_string()),
        false => ("", settings.setup.listener.backlog.to_string()),
    };
    let (child, admission) = (&settings.child, &settings.parent.admission);
    let on_off = |on: bool| if on { "on" } else { "off" };
    // The startup line names the TCP listeners (with --udp-only, the UDP sockets); a UDP line
    // beside TCP comes first.
    let shown = match (udp, addr.is_empty()) {
        (Some(udp), true) => udp,
        (Some(udp), false) => {
            logln!("listening on {udp}");
            addr
        }
        (None, _) => addr,
    };
    logln!(
        "listening on {shown}{origin} pid={} backlog={backlog} buffer={} max-clients={} \
         max-per-ip={} idle-timeout={} max-duration={} rate-per-ip={} ipv6-prefix={} \
         ipv4-prefix={} proxy-protocol={} sandbox={}",
        std::process::id(),
        child.buffer_size,
        admission.max_clients,
        admission.max_per_ip,
        Secs(child.idle_timeout),
        Secs(child.max_duration),
        match admission.rate_per_ip {
            Some(rate) => rate.to_string(),
            None => "off".to_string(),
        },
        admission.grouping.v6,
        admission.grouping.v4,
        on_off(settings.parent.proxy_deadline.is_some()),
        on_off(settings.sandbox)
    );
    if let Some(faults) = parent.faults() {
        logln!("faults {faults}");
    }
    if let Some(faults) = parent.datagram_faults() {
        logln!("udp-faults {faults}");
    }
    if let Some(url) = metrics {
        logln!("metrics on {url}");
    }
    // Privacy is the default: say so whenever a client's bytes or keys are written anywhere.
    if let Some((dir, limit)) = &settings.setup.dump {
        logln!("dump dir={} limit={limit}", Quoted(dir.display()));
    }
    if let Some(path) = &settings.setup.tls_keylog {
        logln!("tls-keylog file={}", Quoted(path.display()));
    }
    // fd 0 is /dev/null since `setup`; std's stdout writes to the number and was just flushed.
    // SAFETY: dup2 replaces fd 1 atomically, and nothing holds fd 1 as an object.
    if unsafe { nix::libc::dup2(0, 1) } < 0 {
        let err = io::Error::last_os_error();
        logln!("warning: stdout stays open to whoever started forkecho: {err}");
    }
}
