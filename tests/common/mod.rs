#![allow(dead_code)]

pub mod origin;
