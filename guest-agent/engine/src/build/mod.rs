//! The Dockerfile front end of `docker build` (the classic builder's
//! semantics, research/build.md): the parser (`parser`), variable
//! substitution (`lex`), the stage and command model (`instructions`),
//! `.dockerignore` matching (`ignore`), the received context and its
//! content hashes (`context`), the build cache's keys and index
//! (`cache`), and `RUN --mount` (`mounts`). Pure and unit-tested; the agent's `build` runs the steps.

pub mod cache;
pub mod context;
pub mod copy;
pub mod ignore;
pub mod instructions;
pub mod lex;
pub mod mounts;
pub mod parser;
