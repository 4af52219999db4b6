//! Integration tests of the mock upstream over real HTTP, one module per area.

mod anthropic;
mod behaviour;
mod common;
mod gemini;
mod limits;
mod openai;
mod scripts;
