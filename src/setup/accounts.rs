//! Who a user or group is, for `--user` and `--group`: asked of `getent`, not of libc.
//!
//! forkecho is linked statically by default (see `.cargo/config.toml`), and a statically linked
//! glibc cannot load the NSS modules behind getpwnam(3) (it crashes in them, or finds a module of
//! another glibc version). `getent passwd NAME` (glibc's own tool, dynamically linked) answers
//! from every source the host's nsswitch.conf names, LDAP and systemd's included, and is run once
//! at startup. Where it is missing, /etc/passwd and /etc/group are read directly.

use std::io;
use std::process::Command;

/// A user database entry: name, uid, primary gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// A group database entry: name and gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

/// Where getent lives on Debian, Fedora, Arch, Alpine and the BSD-style layouts.
const GETENT: [&str; 3] = ["/usr/bin/getent", "/bin/getent", "/usr/sbin/getent"];

/// The user `key` names (a name, or a uid in decimal): None if there is none.
pub fn user(key: &str) -> io::Result<Option<User>> {
    Ok(lookup("passwd", key, "/etc/passwd")?.and_then(|line| parse_user(&line)))
}

/// The group `key` names (a name, or a gid in decimal): None if there is none.
pub fn group(key: &str) -> io::Result<Option<Group>> {
    Ok(lookup("group", key, "/etc/group")?.and_then(|line| parse_group(&line)))
}

/// One line of `database` for `key`: from getent, or from `file` where there is no getent.
fn lookup(database: &str, key: &str, file: &str) -> io::Result<Option<String>> {
    // A key that could be an option or hold a separator is no name at all.
    if key.is_empty() || key.starts_with('-') || key.contains([':', '\n']) {
        return Ok(None);
    }
    let Some(getent) = GETENT.iter().find(|p| std::path::Path::new(p).exists()) else {
        let text = std::fs::read_to_string(file)?;
        return Ok(find_in(&text, key).map(str::to_string));
    };
    let out = Command::new(getent).args([database, key]).output()?;
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_string)),
        // 2: no such key.
        Some(2) => Ok(None),
        _ => Err(io::Error::other(format!(
            "getent {database} {key} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// The line of a passwd or group file whose name is `key`, or else whose id (third field) is.
fn find_in<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let field = |line: &'a str, n: usize| line.split(':').nth(n);
    let lines = || text.lines().filter(|l| !l.starts_with('#'));
    lines()
        .find(|l| field(l, 0) == Some(key))
        .or_else(|| lines().find(|l| key.parse::<u32>().is_ok() && field(l, 2) == Some(key)))
}

fn parse_user(line: &str) -> Option<User> {
    let fields: Vec<&str> = line.split(':').collect();
    Some(User {
        name: fields.first()?.to_string(),
        uid: fields.get(2)?.parse().ok()?,
        gid: fields.get(3)?.parse().ok()?,
    })
}

fn parse_group(line: &str) -> Option<Group> {
    let fields: Vec<&str> = line.split(':').collect();
    Some(Group {
        name: fields.first()?.to_string(),
        gid: fields.get(2)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "# a comment\nroot:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n1000:x:1001:1001::/:/bin/sh\n";

    #[test]
    fn files_are_searched_by_name_then_by_id() {
        assert_eq!(
            find_in(PASSWD, "nobody").and_then(parse_user).unwrap().uid,
            65534
        );
        assert_eq!(
            find_in(PASSWD, "0").and_then(parse_user).unwrap().name,
            "root"
        );
        // A name that looks like a number is a name first.
        assert_eq!(
            find_in(PASSWD, "1000").and_then(parse_user).unwrap().uid,
            1001
        );
        assert_eq!(find_in(PASSWD, "ghost"), None);
        assert_eq!(find_in(PASSWD, "# a comment"), None);
    }

    #[test]
    fn entries_parse_and_broken_ones_do_not() {
        let root = parse_user("root:x:0:0:root:/root:/bin/bash").unwrap();
        assert_eq!((root.name.as_str(), root.uid, root.gid), ("root", 0, 0));
        assert_eq!(parse_user("root:x:zero:0"), None);
        let group = parse_group("nogroup:x:65534:").unwrap();
        assert_eq!((group.name.as_str(), group.gid), ("nogroup", 65534));
    }

    #[test]
    fn the_host_database_answers_for_root() {
        let root = user("root").unwrap().expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(user("0").unwrap().unwrap().name, "root");
        assert_eq!(group("0").unwrap().unwrap().gid, 0);
        assert_eq!(user("no-such-user-forkecho").unwrap(), None);
        assert_eq!(user("-x").unwrap(), None);
    }
}
