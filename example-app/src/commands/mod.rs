//! One module per `clinic` command.

pub mod demo;
