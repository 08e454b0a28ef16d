//! Who must approve a key change, per this node's policy: `[[quorum]]` rules
//! (several distinct admins of a named list) and, for an operation no quorum
//! names, one admin whose `[[admin]]` rule lists it. `[limits]` bounds what
//! any approved request may ask. Pure: the signatures were checked before.

use super::admin_request::{AdminOp, AdminRequest};
use super::policy::{Decision, Policy};
use crate::domain::NodeName;

impl Policy {
    /// Validates the `[[quorum]]` rules: known operations, each in at most
    /// one rule, valid admin names, and 1 <= required <= admins.
    pub(super) fn check_quorums(&self) -> Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        for (i, q) in self.quorum.iter().enumerate() {
            let at = format!("quorum[{i}]");
            if q.operations.is_empty() {
                return Err(format!("{at}: operations must not be empty"));
            }
            for op in &q.operations {
                AdminOp::parse(op).map_err(|e| format!("{at}: {e}"))?;
                if seen.contains(&op.as_str()) {
                    return Err(format!(
                        "{at}: operation {op} is already named by an earlier [[quorum]]"
                    ));
                }
                seen.push(op);
            }
            for a in &q.admins {
                NodeName::parse(a).map_err(|e| format!("{at}: admin {a:?}: {e}"))?;
            }
            let n = q.admins.len();
            if q.required == 0 || usize::try_from(q.required).map_or(true, |r| r > n) {
                return Err(format!(
                    "{at}: required must be from 1 to the number of admins listed ({n})"
                ));
            }
        }
        if self.limits.min_threshold.is_some_and(|t| t < 2) {
            return Err("limits.min_threshold must be at least 2".into());
        }
        if let Some(age) = &self.limits.max_approval_age {
            let secs = super::policy::parse_age(age)
                .map_err(|e| format!("limits.max_approval_age: {e}"))?;
            if secs == 0 || secs > super::policy::MAX_APPROVAL_AGE_CAP_SECS {
                return Err(format!(
                    "limits.max_approval_age: {age:?} must be more than 0 and at most 30d"
                ));
            }
        }
        Ok(())
    }

    /// Do the `approvers` (distinct admins whose signatures over the request
    /// checked) suffice for `request` here, and does it stay within
    /// `[limits]`? The decision names the rule and, when denied, what is
    /// missing.
    pub fn check_approvals(&self, request: &AdminRequest, approvers: &[NodeName]) -> Decision {
        let op = request.operation;
        let sets_threshold = op.spec().committee != crate::node::admin_ops::Takes::No;
        if let (Some(min), true) = (self.limits.min_threshold, sets_threshold) {
            if request.threshold < min {
                return Decision::deny(
                    "limits.min_threshold".into(),
                    format!(
                        "threshold {} is below this node's minimum of {min}",
                        request.threshold
                    ),
                );
            }
        }
        let names = |v: &[String]| v.join(", ");
        let quorum = self
            .quorum
            .iter()
            .enumerate()
            .find(|(_, q)| q.operations.iter().any(|o| o == op.label()));
        if let Some((i, q)) = quorum {
            let rule = format!("quorum[{i}]");
            if let Some(outsider) = approvers
                .iter()
                .find(|a| !q.admins.iter().any(|m| m == a.as_str()))
            {
                return Decision::deny(
                    rule,
                    format!(
                        "admin {outsider} approved, but is not in the quorum for {op} ({})",
                        names(&q.admins)
                    ),
                );
            }
            let have = approvers.len();
            let need = usize::try_from(q.required).unwrap_or(usize::MAX);
            if have < need {
                return Decision::deny(
                    rule,
                    format!(
                        "{op} needs approvals by {need} distinct admins of ({}); the request \
                         has {have}{}: missing approvals",
                        names(&q.admins),
                        if approvers.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", crate::node::names(approvers))
                        }
                    ),
                );
            }
            return Decision::allow(
                rule,
                format!(
                    "approved by {} of the quorum for {op}",
                    crate::node::names(approvers)
                ),
            );
        }
        let Some(first) = approvers.first() else {
            return Decision::deny(
                "default deny".into(),
                format!(
                    "{op} needs the signature of an admin whose [[admin]] rule lists it; the \
                     request carries no approvals"
                ),
            );
        };
        for a in approvers {
            let d = self.check_admin(a.as_str(), op.label());
            if !d.allowed {
                return d;
            }
        }
        self.check_admin(first.as_str(), op.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeyId, KeyType};

    const TEXT: &str = r#"
[[admin]]
name = "ops-1"
operations = ["*"]

[[admin]]
name = "reader"
operations = ["read"]

[[quorum]]
operations = ["reshare", "repair"]
admins = ["ops-1", "ops-2", "sec-1"]
required = 2

[limits]
min_threshold = 2
"#;

    fn n(s: &str) -> NodeName {
        NodeName::parse(s).unwrap()
    }

    fn request(op: AdminOp, threshold: u32) -> AdminRequest {
        AdminRequest {
            operation: op,
            key_id: KeyId::parse("k").unwrap(),
            key_type: Some(KeyType::Secp256k1),
            committee: vec![n("a"), n("b")],
            threshold,
            target: None,
            exclude: vec![],
            cluster: "thresig.local".into(),
            lifecycle_seq: 0,
            request_id: "r".into(),
            issued_unix: 0,
            expiry_unix: 0,
            params: Vec::new(),
        }
    }

    #[test]
    fn a_quorum_needs_enough_distinct_members_and_no_outsiders() {
        let pol = Policy::parse(TEXT).unwrap();
        let reshare = request(AdminOp::Reshare, 2);
        let one = pol.check_approvals(&reshare, &[n("ops-1")]);
        assert!(!one.allowed);
        assert_eq!(one.rule, "quorum[0]");
        assert!(one.reason.contains("needs approvals by 2"), "{one}");
        assert!(one.reason.contains("has 1 (ops-1)"), "{one}");
        let two = pol.check_approvals(&reshare, &[n("ops-1"), n("sec-1")]);
        assert!(two.allowed, "{two}");
        let outsider = pol.check_approvals(&reshare, &[n("ops-1"), n("reader")]);
        assert!(!outsider.allowed);
        assert!(
            outsider
                .reason
                .contains("reader approved, but is not in the quorum"),
            "{outsider}"
        );
        let none = pol.check_approvals(&reshare, &[]);
        assert!(!none.allowed && none.reason.contains("has 0"), "{none}");
    }

    #[test]
    fn quorum_admins_read_the_keys_and_nothing_else() {
        let pol = Policy::parse(TEXT).unwrap();
        let d = pol.check_admin("sec-1", "read-keys");
        assert!(d.allowed && d.rule == "quorum[0]", "{d}");
        assert!(
            !pol.check_admin("sec-1", "read").allowed,
            "audit and status stay closed"
        );
        assert!(!pol.check_admin("sec-1", "rotate").allowed);
        // "read" in an [[admin]] rule covers the keys too.
        assert!(pol.check_admin("reader", "read-keys").allowed);
        assert!(!pol.check_admin("stranger", "read-keys").allowed);
    }

    #[test]
    fn operations_no_quorum_names_need_one_admin_allowed_by_its_rule() {
        let pol = Policy::parse(TEXT).unwrap();
        let rotate = request(AdminOp::Rotate, 0);
        assert!(pol.check_approvals(&rotate, &[n("ops-1")]).allowed);
        let reader = pol.check_approvals(&rotate, &[n("reader")]);
        assert!(
            !reader.allowed && reader.rule == "admin[1] (reader)",
            "{reader}"
        );
        let mixed = pol.check_approvals(&rotate, &[n("ops-1"), n("stranger")]);
        assert!(!mixed.allowed && mixed.rule == "default deny", "{mixed}");
        let none = pol.check_approvals(&rotate, &[]);
        assert!(
            !none.allowed && none.reason.contains("no approvals"),
            "{none}"
        );
    }

    #[test]
    fn the_minimum_threshold_binds_create_reshare_and_import() {
        let pol = Policy::parse(TEXT).unwrap();
        let d = pol.check_approvals(&request(AdminOp::Import, 1), &[n("ops-1"), n("ops-2")]);
        assert_eq!(d.rule, "limits.min_threshold");
        assert!(!d.allowed);
        let d = pol.check_approvals(&request(AdminOp::Create, 1), &[n("ops-1")]);
        assert_eq!(d.rule, "limits.min_threshold");
        assert!(!d.allowed);
        let d = pol.check_approvals(&request(AdminOp::Reshare, 1), &[n("ops-1"), n("ops-2")]);
        assert_eq!(d.rule, "limits.min_threshold");
        assert!(
            pol.check_approvals(&request(AdminOp::Create, 2), &[n("ops-1")])
                .allowed
        );
    }

    #[test]
    fn bad_quorum_rules_are_refused_with_their_place() {
        let bad = [
            ("[[quorum]]\noperations = [\"sign\"]\nadmins = [\"a\"]\nrequired = 1\n", "unknown admin operation"),
            ("[[quorum]]\noperations = [\"rotate\"]\nadmins = [\"a\"]\nrequired = 2\n", "required must be"),
            ("[[quorum]]\noperations = [\"rotate\"]\nadmins = [\"a\"]\nrequired = 0\n", "required must be"),
            ("[[quorum]]\noperations = [\"rotate\"]\nadmins = [\"a\"]\nrequired = 1\n[[quorum]]\noperations = [\"rotate\"]\nadmins = [\"b\"]\nrequired = 1\n", "already named"),
            ("[limits]\nmin_threshold = 1\n", "at least 2"),
        ];
        for (text, why) in bad {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
