//! Process hardening for a node: no core dumps (a dump would hold
//! decrypted shares and the KEK) and not ptrace-attachable by other
//! processes of the same user (PR_SET_DUMPABLE = 0). Linux only; elsewhere
//! a no-op that says so.

/// Disables core dumps for this process. Called before the store is opened.
pub fn disable_core_dumps() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{
            set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit,
        };
        setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )?;
        set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    }
    Ok(())
}
