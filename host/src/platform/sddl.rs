//! Security descriptors in SDDL, the form Windows takes them in from a
//! string (ConvertStringSecurityDescriptorToSecurityDescriptorW, HCS's
//! HvSocket settings). Plain code, tested on every host: what the strings
//! grant is decided here, the conversion is Windows'.

/// A user's SID in its string form (`S-1-5-21-…`), checked so that it
/// cannot end the ACE it is put in (no `)` or `;` gets through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sid(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a SID (S-1-<authority>-<sub-authorities>)")]
pub struct BadSid(String);

impl Sid {
    pub fn parse(text: &str) -> Result<Sid, BadSid> {
        let parts: Vec<&str> = text.split('-').collect();
        let numeric = |part: &&str| !part.is_empty() && part.len() <= 10 && part.bytes().all(|b| b.is_ascii_digit());
        // S, revision 1, the authority, and 1 to 15 sub-authorities.
        let ok = parts.len() >= 4
            && parts.len() <= 18
            && parts[0] == "S"
            && parts[1] == "1"
            && parts[2..].iter().all(numeric);
        if ok {
            Ok(Sid(text.to_string()))
        } else {
            Err(BadSid(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who may bind and connect Hyper-V sockets of a VM Berth creates: SYSTEM
/// and the user, file-all-access, protected from inherited ACEs (the
/// descriptor WSL gives its VMs, HcsVirtualMachine.cpp). With it the
/// user's daemon reaches the agent without being an administrator.
pub fn hvsocket_descriptor(user: &Sid) -> String {
    format!("D:P(A;;FA;;;SY)(A;;FA;;;{})", user.as_str())
}

/// Who may open the Docker API pipe: SYSTEM and the user, generic-all.
/// Windows' default pipe DACL also lets Everyone read, and anyone who can
/// talk to the engine controls it (dockerd's pipe admits Administrators and
/// SYSTEM only, plus a configured group).
pub fn api_pipe_descriptor(user: &Sid) -> String {
    format!("D:P(A;;GA;;;SY)(A;;GA;;;{})", user.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "S-1-5-21-1004336348-1177238915-682003330-1001";

    #[test]
    fn descriptors_grant_system_and_the_user_only() {
        let user = Sid::parse(USER).unwrap();
        assert_eq!(hvsocket_descriptor(&user), format!("D:P(A;;FA;;;SY)(A;;FA;;;{USER})"));
        assert_eq!(api_pipe_descriptor(&user), format!("D:P(A;;GA;;;SY)(A;;GA;;;{USER})"));
    }

    #[test]
    fn only_sids_are_put_in_a_descriptor() {
        assert!(Sid::parse("S-1-5-18").is_ok(), "LocalSystem");
        for bad in ["", "S-1-5", "S-2-5-18", "s-1-5-18", "S-1-5-18)(A;;FA;;;WD", "S-1-5--18", "S-1-5-18 ", "S-1-5-x"] {
            assert_eq!(Sid::parse(bad), Err(BadSid(bad.to_string())), "{bad:?}");
        }
    }
}
