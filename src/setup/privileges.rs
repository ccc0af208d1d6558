//! Dropping root after binding (`--user`, `--group`).
//!
//! Binding a port below 1024 needs root; serving clients must not. After the listener is bound,
//! the supplementary groups are dropped, then the gid, then the uid (in that order: once the uid
//! is gone the others can no longer be changed), and the drop is verified: getting root back
//! with setuid(0) must fail. Unknown names are refused before anything changes.

use anyhow::{Context, Result, bail, ensure};
use nix::unistd::{Gid, Uid};

use super::accounts;

/// Who to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// None with `--group` alone: the uid stays as it is.
    pub uid: Option<Uid>,
    pub gid: Gid,
    /// For the log: `user=nobody group=nogroup`.
    pub description: String,
}

/// Resolves `--user` / `--group` (names or numbers). None when neither was given.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>> {
    let user = user.map(find_user).transpose()?;
    let group = group.map(find_group).transpose()?;
    let (uid, gid, user_name) = match (user, group) {
        (None, None) => return Ok(None),
        (Some((uid, Some(gid), name)), None) => (Some(uid), gid, Some(name)),
        (Some((_, None, name)), None) => {
            bail!(
                "user '{name}' has no entry in the user database, so no primary group: \
                 give --group too"
            )
        }
        (Some((uid, _, name)), Some((gid, _))) => (Some(uid), gid, Some(name)),
        (None, Some((gid, _))) => (None, gid, None),
    };
    let group_name = accounts::group(&gid.to_string())
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name);
    let description = match user_name {
        Some(user) => format!(
            "user={user} uid={} group={group_name} gid={gid}",
            uid.unwrap()
        ),
        None => format!("group={group_name} gid={gid}"),
    };
    Ok(Some(Identity {
        uid,
        gid,
        description,
    }))
}

/// A user by name, or by number when no user has that name: (uid, primary gid, name).
fn find_user(name: &str) -> Result<(Uid, Option<Gid>, String)> {
    let found = accounts::user(name).with_context(|| format!("unable to look up user '{name}'"))?;
    match found {
        Some(user) if user.name == name => Ok((
            Uid::from_raw(user.uid),
            Some(Gid::from_raw(user.gid)),
            user.name,
        )),
        // Found by number: keep the number as the name the log shows.
        Some(user) => Ok((
            Uid::from_raw(user.uid),
            Some(Gid::from_raw(user.gid)),
            name.to_string(),
        )),
        None => match name.parse::<u32>() {
            Ok(raw) => Ok((Uid::from_raw(raw), None, name.to_string())),
            Err(_) => bail!("unknown user '{name}'"),
        },
    }
}

/// A group by name, or by number when no group has that name.
fn find_group(name: &str) -> Result<(Gid, String)> {
    let found =
        accounts::group(name).with_context(|| format!("unable to look up group '{name}'"))?;
    match found {
        Some(group) => Ok((Gid::from_raw(group.gid), group.name)),
        None => match name.parse::<u32>() {
            Ok(raw) => Ok((Gid::from_raw(raw), name.to_string())),
            Err(_) => bail!("unknown group '{name}'"),
        },
    }
}

/// Becomes `who`: no supplementary groups, then its gid, then its uid; then checks it stuck.
pub fn drop_to(who: &Identity) -> Result<()> {
    let hint = "--user and --group need forkecho to start as root";
    nix::unistd::setgroups(&[])
        .with_context(|| format!("unable to drop supplementary groups ({hint})"))?;
    nix::unistd::setgid(who.gid)
        .with_context(|| format!("unable to switch to gid {} ({hint})", who.gid))?;
    if let Some(uid) = who.uid {
        nix::unistd::setuid(uid)
            .with_context(|| format!("unable to switch to uid {uid} ({hint})"))?;
    }
    ensure!(
        nix::unistd::getgid() == who.gid && nix::unistd::getegid() == who.gid,
        "the gid did not change to {}",
        who.gid
    );
    if let Some(uid) = who.uid {
        ensure!(
            nix::unistd::getuid() == uid && nix::unistd::geteuid() == uid,
            "the uid did not change to {uid}"
        );
        if !uid.is_root() {
            ensure!(
                nix::unistd::setuid(Uid::from_raw(0)).is_err(),
                "privileges were not dropped: setuid(0) still succeeds"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_asked_means_nothing_to_do() {
        assert_eq!(resolve(None, None).unwrap(), None);
    }

    #[test]
    fn root_resolves_by_name_with_its_primary_group() {
        let who = resolve(Some("root"), None).unwrap().unwrap();
        assert_eq!(who.uid, Some(Uid::from_raw(0)));
        assert_eq!(who.gid, Gid::from_raw(0));
        assert!(
            who.description.starts_with("user=root uid=0 group="),
            "{}",
            who.description
        );
    }

    #[test]
    fn numbers_work_where_no_name_matches() {
        let who = resolve(Some("61234"), Some("61235")).unwrap().unwrap();
        assert_eq!(who.uid, Some(Uid::from_raw(61234)));
        assert_eq!(who.gid, Gid::from_raw(61235));
    }

    #[test]
    fn a_numeric_user_without_an_entry_needs_a_group() {
        let err = resolve(Some("61234"), None).unwrap_err().to_string();
        assert!(err.contains("give --group too"), "{err}");
    }

    #[test]
    fn unknown_names_are_refused_by_name() {
        let err = resolve(Some("no-such-user-here"), None).unwrap_err();
        assert_eq!(err.to_string(), "unknown user 'no-such-user-here'");
        let err = resolve(None, Some("no-such-group-here")).unwrap_err();
        assert_eq!(err.to_string(), "unknown group 'no-such-group-here'");
    }
}
