//! Networks: tape autograd, the architecture spec and built-in models, initialisation and
//! gradient checking.

pub mod arch;
pub mod autograd;
pub mod classes;
pub mod gradcheck;
pub mod init;
pub mod model;
pub mod zoo;
