//! The three roles. The enum is the store's (`store::policy`, stored as `viewer`,
//! `operator`, `admin`), re-exported here as the domain's name for it: ordered, so
//! `role >= Role::Operator` reads as "may operate".

pub use crate::store::policy::Role;

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn roles_are_ordered_and_round_trip_as_snake_case() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(Role::ALL.iter().max(), Some(&Role::Admin));
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>().ok(), Some(*role));
            assert_eq!(serde_json::to_value(role).ok(), Some(serde_json::json!(role.as_str())));
        }
        assert_eq!(Role::Operator.to_string(), "operator");
        assert!("Admin".parse::<Role>().is_err() && "root".parse::<Role>().is_err());
    }
}
