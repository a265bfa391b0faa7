//! The conformance suite every connector and every vendor profile must pass.
