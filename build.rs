//! Writes the man page (plain and gzipped) and the bash, zsh and fish completions at build time,
//! for `cargo deb` to package (`[package.metadata.deb]` in Cargo.toml).
//!
//! They come from the very code behind `forkecho --man` and `forkecho --completions SHELL`:
//! src/cli/ (and the fault values it parses, src/faults.rs) is compiled into this script as
//! well, so the packaged files cannot drift from the binary, and none is committed. They are
//! written to `forkecho-assets/` beside the binary (`target/<host>/release/forkecho-assets/`),
//! not into OUT_DIR, because cargo-deb finds built files only under the profile's directory, and
//! OUT_DIR's name carries a hash (cargo-deb's issue #67).

// The script uses the generators only: the parsers and the rest of the options go unused here.
#![allow(dead_code, unused_imports)]

#[path = "src/cli/mod.rs"]
mod cli;
#[path = "src/faults.rs"]
mod faults;
#[path = "src/network.rs"]
mod network;
#[path = "src/selectors.rs"]
mod selectors;
#[path = "src/websocket_faults.rs"]
mod websocket_faults;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

fn main() -> io::Result<()> {
    for input in [
        "build.rs",
        "src/cli",
        "src/faults.rs",
        "src/network.rs",
        HOT_ORDER,
    ] {
        println!("cargo::rerun-if-changed={input}");
    }
    lay_out_the_child();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let page = generate(cli::man::write_man)?;
    let mut files = vec![("forkecho.1.gz", gzip(&page)?), ("forkecho.1", page)];
    for (name, shell) in [
        ("forkecho.bash", Shell::Bash),
        ("_forkecho", Shell::Zsh),
        ("forkecho.fish", Shell::Fish),
    ] {
        files.push((
            name,
            generate(|out| cli::man::write_completions(shell, out))?,
        ));
    }
    // OUT_DIR is <target>/<host>/<profile>/build/forkecho-<hash>/out. Nothing reads OUT_DIR
    // itself, so the files are written only beside the binary.
    if let Some(profile) = out.ancestors().nth(3) {
        copy_beside_binary(profile, &files)?;
        link_for_cargo_deb(profile)?;
    }
    Ok(())
}

/// The file naming what a connection's child touches, for the linker to lay out together.
const HOT_ORDER: &str = "src/child/hot.order";

/// Asks the linker to lay out the code and data a connection's child touches together
/// (`src/child/hot.order`; `src/child/mod.rs` and `src/child/layout.rs` say why), with `.data`
/// starting a page (`-z separate-loadable-segments`), where the linker is known to be LLD,
/// which rustc uses on x86_64 Linux from 1.90 on unless told otherwise: GNU ld has no
/// --symbol-ordering-file. Elsewhere the build is the same, its children a few page faults
/// dearer.
fn lay_out_the_child() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let linker_chosen = var("CARGO_ENCODED_RUSTFLAGS").contains("link")
        || std::env::vars().any(|(name, _)| name.ends_with("_LINKER"));
    let lld_by_default = var("TARGET") == "x86_64-unknown-linux-gnu" && rustc_minor() >= Some(90);
    if linker_chosen || !lld_by_default {
        return;
    }
    let listed = Path::new(&var("CARGO_MANIFEST_DIR")).join(HOT_ORDER);
    let order = Path::new(&var("OUT_DIR")).join("hot.order");
    let Ok(()) = write_order_file(&listed, &order) else {
        println!(
            "cargo::warning=could not write {}: the child is not laid out",
            order.display()
        );
        return;
    };
    let window = Path::new(&var("OUT_DIR")).join("window.o");
    if let Err(err) = write_window_object(&window) {
        println!("cargo::warning=could not write {}: {err}", window.display());
        return;
    }
    println!("cargo::rustc-link-arg-bins={}", window.display());
    println!("cargo::rustc-env=FORKECHO_CHILD_LAID_OUT=1");
    for arg in [
        format!("--symbol-ordering-file={}", order.display()),
        "--no-warn-symbol-ordering".to_string(),
        "-zkeep-text-section-prefix".to_string(),
        "-zseparate-loadable-segments".to_string(),
    ] {
        println!("cargo::rustc-link-arg-bins=-Wl,{arg}");
    }
}

/// Writes `window.o`: two markers of one byte of code each (never run), each in a section
/// aligned to 64 KiB under a symbol `hot.order` puts first in its output section:
/// `forkecho_child_libc_window` in `.text`, before the C library's and core's functions a child
/// calls, and `forkecho_child_text_window` in `.text.hot`, the child's own code, with the C
/// library's stubs laid out after it (`.iplt`, through which a child calls memcpy). The kernel
/// maps a file's pages in around a fault up to 64 KiB at a time, aligned, so each group is in
/// memory after one fault (tests/layout.rs checks). An object of its own, linked after Rust's: in
/// Rust's, a marker section would come first in the object and move `.text.hot` ahead of
/// `.text.unlikely`, away from the stubs.
fn write_window_object(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SectionFlags, SectionKind};
    use object::{SymbolFlags, SymbolKind, SymbolScope, elf};
    let mut file = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    // Kept by the linker though nothing refers to them (SHF_GNU_RETAIN).
    let sh_flags = u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR | elf::SHF_GNU_RETAIN);
    for (section, symbol) in [
        (".text.forkecho_window", "forkecho_child_libc_window"),
        (".text.hot.forkecho_window", "forkecho_child_text_window"),
    ] {
        let section = file.add_section(Vec::new(), section.into(), SectionKind::Text);
        file.section_mut(section).flags = SectionFlags::Elf { sh_flags };
        let int3 = 0xcc;
        let value = file.append_section_data(section, &[int3], 64 << 10);
        file.add_symbol(Symbol {
            name: symbol.into(),
            value,
            size: 1,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        });
    }
    fs::write(path, file.write()?)?;
    Ok(())
}

/// Writes the order file lld gets: `listed` (`src/child/hot.order`) with each `core::` path
/// replaced by the symbol that function of core has in this toolchain. Rust's v0 symbols name a
/// crate with a hash (`_RNvNtCs<hash>_4core3fmt5write` for `core::fmt::write`) that changes with
/// every release, so the file names the path and this finds the hash, in the core library of the
/// sysroot. Where it cannot, the paths are left out, as the linker leaves out names not in the
/// build: the children take a page fault or two more.
fn write_order_file(listed: &Path, order: &Path) -> io::Result<()> {
    let listed = fs::read_to_string(listed)?;
    let first = listed.lines().find_map(|line| line.strip_prefix("core::"));
    let hash = first.and_then(core_hash);
    let mut out = String::new();
    for line in listed.lines() {
        match (line.strip_prefix("core::"), &hash) {
            (None, _) => out.push_str(line),
            (Some(path), Some(hash)) => out.push_str(&core_symbol(hash, path)),
            (Some(_), None) => continue,
        }
        out.push('\n');
    }
    fs::write(order, out)
}

/// The v0 symbol of `core::` + `path` (a free function), for core's crate hash `hash`:
/// `fmt::write` is `_RNvNtCs<hash>_4core3fmt5write`.
fn core_symbol(hash: &str, path: &str) -> String {
    let (prefix, suffix) = core_symbol_parts(path);
    format!("{prefix}{hash}{suffix}")
}

/// A v0 symbol of core's around the crate hash: `_RNvNtCs` and `_4core3fmt5write`.
fn core_symbol_parts(path: &str) -> (String, String) {
    let names: Vec<&str> = path.split("::").collect();
    let prefix = format!("_RNv{}Cs", "Nt".repeat(names.len() - 1));
    let suffix = names.iter().fold("_4core".to_string(), |mut suffix, name| {
        suffix.push_str(&format!("{}{name}", name.len()));
        suffix
    });
    (prefix, suffix)
}

/// Core's crate hash in this toolchain's symbols, read off the symbol of `core::` + `path` in
/// the sysroot's libcore rlib.
fn core_hash(path: &str) -> Option<String> {
    let rustc = std::env::var_os("RUSTC")?;
    let out = std::process::Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let target = std::env::var("TARGET").ok()?;
    let lib = sysroot.join("lib/rustlib").join(target).join("lib");
    let rlib = fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|file| {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })?;
    let bytes = fs::read(rlib).ok()?;
    let (prefix, suffix) = core_symbol_parts(path);
    let (prefix, suffix) = (prefix.as_bytes(), suffix.as_bytes());
    // The hash is base 62, up to 13 characters: between the prefix and the suffix.
    bytes
        .windows(suffix.len())
        .enumerate()
        .find_map(|(at, window)| {
            let before = &bytes[at.saturating_sub(prefix.len() + 16)..at];
            let start = (window == suffix).then(|| find_last(before, prefix))??;
            let hash = &before[start + prefix.len()..];
            let alphanumeric = !hash.is_empty() && hash.iter().all(u8::is_ascii_alphanumeric);
            alphanumeric.then(|| String::from_utf8_lossy(hash).into_owned())
        })
}

/// Where `needle` last begins in `haystack`.
fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

/// The minor version of the rustc building this (1.x), if it says.
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var_os("RUSTC")?;
    let out = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8(out.stdout).ok()?;
    version
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}

/// cargo-deb learns the target only from `--target` or CARGO_BUILD_TARGET, not from
/// `[build] target = "host-tuple"` in .cargo/config.toml: a plain `cargo deb` builds (through
/// cargo, so into <target>/<host>/<profile>/) and then packages <target>/<profile>/forkecho, a
/// stale binary or none. So when building for the host, <target>/<profile>/forkecho and
/// forkecho-assets are made symbolic links to this build's (the binary's dangles until it is
/// linked). A build for another target (`--target`) leaves them alone: cargo-deb then looks in
/// that target's directory itself.
fn link_for_cargo_deb(profile: &Path) -> io::Result<()> {
    let (Some(name), Some(triple_dir)) = (profile.file_name(), profile.parent()) else {
        return Ok(());
    };
    let target = std::env::var_os("TARGET");
    if target.is_none() || triple_dir.file_name() != target.as_deref() {
        return Ok(());
    }
    let Some(target_dir) = triple_dir.parent() else {
        return Ok(());
    };
    let plain = target_dir.join(name);
    fs::create_dir_all(&plain)?;
    let triple = triple_dir
        .file_name()
        .expect("the triple's directory has a name");
    for file in ["forkecho", "forkecho-assets"] {
        let wanted = Path::new("..").join(triple).join(name).join(file);
        let link = plain.join(file);
        if fs::read_link(&link).ok().as_deref() == Some(wanted.as_path()) {
            continue;
        }
        match fs::symlink_metadata(&link) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&link)?,
            Ok(_) => fs::remove_file(&link)?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&wanted, &link)?;
    }
    Ok(())
}

/// Compressed the way Debian wants manual pages: gzip at its best, no name, no time stamp.
fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    io::Write::write_all(&mut encoder, data)?;
    encoder.finish()
}

fn generate(write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut text = Vec::new();
    write(&mut text)?;
    Ok(text)
}

/// Writes the files into `<profile>/forkecho-assets/`, leaving a file alone when it already
/// holds the same bytes (so its time stamp says when the options last changed).
fn copy_beside_binary(profile: &Path, files: &[(&str, Vec<u8>)]) -> io::Result<()> {
    let dir = profile.join("forkecho-assets");
    fs::create_dir_all(&dir)?;
    for (name, text) in files {
        let path = dir.join(name);
        if fs::read(&path).ok().as_deref() != Some(text.as_slice()) {
            fs::write(&path, text)?;
        }
    }
    Ok(())
}
