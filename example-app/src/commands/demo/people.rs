//! Who the tour is about and who it acts as: the fictional patient it follows, and the actor
//! its audit entries name.

use chrono::NaiveDate;

use crate::clinic::NewPatient;

/// The actor the demo's audit entries carry.
pub(super) const DEMO_ACTOR: &str = "demo";

/// A clearly fictional person (555-01xx numbers are reserved for fiction).
pub(super) struct FakePatient {
    pub(super) first_name: &'static str,
    pub(super) last_name: &'static str,
    pub(super) email: &'static str,
    pub(super) phone: Option<&'static str>,
    pub(super) address: Option<&'static str>,
    pub(super) born: (i32, u32, u32),
    pub(super) history: Option<&'static str>,
}

impl FakePatient {
    pub(super) fn to_new(&self) -> NewPatient {
        let (y, m, d) = self.born;
        NewPatient {
            first_name: self.first_name.to_owned(),
            last_name: self.last_name.to_owned(),
            email: self.email.to_owned(),
            phone: self.phone.map(str::to_owned),
            address: self.address.map(str::to_owned),
            date_of_birth: NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default(),
            medical_history: self.history.map(str::to_owned),
        }
    }
}

/// The patient the tour follows.
pub(super) const ALBA: FakePatient = FakePatient {
    first_name: "Alba",
    last_name: "Examplewood",
    email: "alba.examplewood@example.org",
    phone: Some("+1 555 0142"),
    address: Some("12 Lantern Lane, Fictionville 10001"),
    born: (1984, 3, 9),
    history: Some("Seasonal allergies; penicillin intolerance noted 2019."),
};
