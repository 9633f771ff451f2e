//! `vitals`: the remaining scalar plaintext types (i32, i16, u32, u64, f32, NaiveDateTime).

use chrono::NaiveDateTime;
use encrypted_columns::{Encrypted, column_context};
use sea_orm::entity::prelude::*;

column_context!(pub VitalHeartRate, table = "vitals", column = "heart_rate");
column_context!(pub VitalSystolic, table = "vitals", column = "systolic");
column_context!(pub VitalSteps, table = "vitals", column = "steps");
column_context!(pub VitalDeviceSerial, table = "vitals", column = "device_serial");
column_context!(pub VitalTemperature, table = "vitals", column = "temperature_c");
column_context!(pub VitalTakenAt, table = "vitals", column = "taken_at");

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "vitals")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub heart_rate: Encrypted<i32, VitalHeartRate>,
    pub systolic: Encrypted<i16, VitalSystolic>,
    pub steps: Encrypted<u32, VitalSteps>,
    pub device_serial: Encrypted<u64, VitalDeviceSerial>,
    pub temperature_c: Encrypted<f32, VitalTemperature>,
    pub taken_at: Encrypted<NaiveDateTime, VitalTakenAt>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
