//! What the agent learns beside the kernel's events, each from its own
//! source and on its own task: pods and images from the CRI API (`cri`,
//! `pods`, `images`), pull intents (`pull_intent`: a pod needs an image
//! now) from the CRI and from the Kubernetes API (`kubernetes`), and the
//! addresses of the catalog's names (`resolver`).
//!
//! Sources feed the pipeline and the report; they import nothing from
//! either.

pub mod cri;
pub mod images;
pub mod kubernetes;
pub mod pods;
pub mod pull_intent;
pub mod resolver;
