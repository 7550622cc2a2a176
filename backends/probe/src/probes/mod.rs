//! The probe types: API, authorization behaviour, watch streams, transport.
