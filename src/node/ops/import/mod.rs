//! `import`: moving a key that exists whole elsewhere into shares (issue 21,
//! item 4). The admin's workstation deals the key (`protocol::import`),
//! seals each member's point to its node's certificate key and signs the
//! request with the dealing as its parameters (`params.rs`). Each member
//! opens and checks its point before it keeps anything; a complete refresh
//! among the committee follows, then the activation certificate.
//!
//! Built so far: the parameters and the sealing. The coordinator and
//! participant steps (through the generic admin proposal) and `thresig keys
//! import` are the next part.

pub mod params;
