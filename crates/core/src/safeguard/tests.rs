use super::*;
use crate::MfaUser;

/// A change for user `u{n}` of item `item` (the stored row's `sync_item`).
fn ch_in(action: Action, n: usize, item: &str) -> Change {
    let user = MfaUser {
        username: format!("u{n}"),
        directory_id: Some(format!("id{n}")),
        dn: Some(format!("uid=u{n},ou=people,dc=x")),
        sync_item: Some(item.to_string()),
        ..MfaUser::default()
    };
    Change {
        action,
        before: Some(user.clone()),
        user,
        fields: vec![],
        reason: None,
        raw: None,
    }
}

fn ch(action: Action, n: usize) -> Change {
    ch_in(action, n, "ou=people,dc=x")
}

fn plan_of(changes: Vec<Change>) -> Plan {
    Plan {
        changes,
        ..Plan::default()
    }
}

fn total(t: Threshold) -> Limits {
    Limits {
        total: Some(t),
        ..Limits::default()
    }
}

fn names(changes: &[&Change]) -> Vec<String> {
    changes.iter().map(|c| c.user.username.clone()).collect()
}

#[test]
fn threshold_holds_all_departures_only_when_exceeded() {
    let mut changes = vec![ch(Action::Create, 0)];
    for i in 1..=6 {
        let action = if i % 2 == 0 {
            Action::Disable
        } else {
            Action::Remove
        };
        changes.push(ch(action, i));
    }
    let plan = plan_of(changes);
    let none = Protection::default();
    let s = split(&plan, &total(Threshold::Count(5)), &none);
    assert_eq!((s.now.len(), s.held.len()), (1, 6));
    assert_eq!(s.held[0].by.to_string(), "approval_threshold = 5");
    let s = split(&plan, &total(Threshold::Count(6)), &none);
    assert_eq!((s.now.len(), s.held.len()), (7, 0));
    let s = split(&plan, &Limits::default(), &none);
    assert_eq!((s.now.len(), s.held.len()), (7, 0));
}

#[test]
fn percent_parses_and_prints_back() {
    assert_eq!(
        Threshold::parse_percent("2%"),
        Ok(Threshold::Percent(20_000))
    );
    assert_eq!(
        Threshold::parse_percent(" 0.5 %"),
        Ok(Threshold::Percent(5_000))
    );
    assert_eq!(
        Threshold::parse_percent("100%"),
        Ok(Threshold::Percent(1_000_000))
    );
    assert_eq!(Threshold::Percent(25_000).to_string(), "\"2.5%\"");
    assert_eq!(Threshold::Percent(20_000).to_string(), "\"2%\"");
    for bad in [
        "0%", "0.00%", "101%", "2", "%", "two%", "-1%", "1.23456%", "1e2%",
    ] {
        assert!(Threshold::parse_percent(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn two_percent_of_a_thousand_lets_twenty_through_and_holds_twenty_one() {
    let t = Threshold::parse_percent("2%").unwrap();
    assert_eq!(t.limit(1_000), 20);
    assert_eq!(t.limit(1_049), 20, "floor");
    let limits = Limits {
        population: 1_000,
        ..total(t)
    };
    let none = Protection::default();
    let twenty = plan_of((0..20).map(|i| ch(Action::Disable, i)).collect());
    let s = split(&twenty, &limits, &none);
    assert_eq!((s.now.len(), s.held.len()), (20, 0));
    let twenty_one = plan_of((0..21).map(|i| ch(Action::Disable, i)).collect());
    let s = split(&twenty_one, &limits, &none);
    assert_eq!((s.now.len(), s.held.len()), (0, 21));
    assert_eq!(
        s.held[0].by.to_string(),
        "approval_threshold = \"2%\" (20 of 1,000 users)"
    );
}

#[test]
fn per_action_limits_count_only_their_action() {
    let mut changes: Vec<Change> = (0..3).map(|i| ch(Action::Disable, i)).collect();
    changes.extend((3..5).map(|i| ch(Action::Remove, i)));
    let plan = plan_of(changes);
    let limits = Limits {
        disables: Some(Threshold::Count(5)),
        removals: Some(Threshold::Percent(10_000)), // 1% of 100: 1
        population: 100,
        ..Limits::default()
    };
    let s = split(&plan, &limits, &Protection::default());
    assert_eq!(names(&s.now), ["u0", "u1", "u2"]);
    assert_eq!(names(&s.held_changes()), ["u3", "u4"]);
    assert_eq!(
        s.held[0].by.to_string(),
        "approval_threshold_removals = \"1%\" (1 of 100 users)"
    );
    let tight = Limits {
        disables: Some(Threshold::Count(2)),
        ..Limits::default()
    };
    let s = split(&plan, &tight, &Protection::default());
    assert_eq!(names(&s.held_changes()), ["u0", "u1", "u2"]);
    assert_eq!(names(&s.now), ["u3", "u4"]);
}

#[test]
fn a_budget_holds_an_items_fourth_departure() {
    let vpn = "CN=VPN,OU=Groups,DC=x";
    let mut changes = vec![ch(Action::Update, 0)];
    changes.extend((1..=4).map(|i| ch_in(Action::Disable, i, "cn=vpn, ou=groups, dc=x")));
    changes.push(ch_in(Action::Remove, 5, "ou=other,dc=x"));
    let plan = plan_of(changes);
    let limits = Limits {
        budgets: vec![Budget {
            item: vpn.into(),
            max: 3,
        }],
        ..Limits::default()
    };
    let s = split(&plan, &limits, &Protection::default());
    assert_eq!(names(&s.now), ["u0", "u1", "u2", "u3", "u5"]);
    assert_eq!(names(&s.held_changes()), ["u4"]);
    assert_eq!(
        s.held[0].by.to_string(),
        format!("max_departures = 3 of item {vpn}")
    );
}

#[test]
fn protected_users_are_dropped_not_held() {
    let mut protection =
        Protection::of_names(&["BreakGlass".into(), "cn=tier0,ou=groups,dc=x".into()]);
    protection.add_member("UID=u2, OU=people, DC=x", None, "cn=tier0,ou=groups,dc=x");
    // moved since it was stored: found by its unique id
    protection.add_member(
        "uid=u4,ou=elsewhere,dc=x",
        Some("id4"),
        "cn=tier0,ou=groups,dc=x",
    );
    let mut changes = vec![
        ch(Action::Disable, 1),
        ch(Action::Remove, 2),
        ch(Action::Update, 2),
    ];
    let mut glass = ch(Action::Disable, 3);
    glass.user.username = "breakglass".into();
    changes.push(glass);
    changes.push(ch(Action::Disable, 4));
    let plan = plan_of(changes);
    let s = split(&plan, &total(Threshold::Count(1)), &protection);
    assert_eq!(
        names(&s.now),
        ["u1", "u2"],
        "the update of u2 still applies"
    );
    assert!(
        s.held.is_empty(),
        "one unprotected departure is within the threshold"
    );
    assert_eq!(
        names(&s.protected.iter().map(|p| p.change).collect::<Vec<_>>()),
        ["u2", "breakglass", "u4"]
    );
    assert!(
        s.protected[0].why.contains("cn=tier0,ou=groups,dc=x"),
        "{}",
        s.protected[0].why
    );
    assert!(
        s.protected[1].why.contains("breakglass"),
        "{}",
        s.protected[1].why
    );
}

#[test]
fn an_unreadable_protected_group_stops_every_departure() {
    let plan = plan_of(vec![
        ch(Action::Create, 0),
        ch(Action::Disable, 1),
        ch(Action::Remove, 2),
    ]);
    let why = "cannot read protected group cn=tier0,dc=x: no such object".to_string();
    let s = split(
        &plan,
        &Limits::default(),
        &Protection::Unreadable(why.clone()),
    );
    assert_eq!(names(&s.now), ["u0"]);
    assert_eq!(s.protected.len(), 2);
    assert!(s.protected[0].why.ends_with(&why), "{}", s.protected[0].why);
}

#[test]
fn thousands_are_grouped() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1_000), "1,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
}

#[test]
fn fingerprint_is_order_independent() {
    let a = vec![ch(Action::Disable, 1), ch(Action::Remove, 2)];
    let b = vec![ch(Action::Remove, 2), ch(Action::Disable, 1)];
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_ne!(fingerprint(&a), fingerprint(&a[..1]));
}
