//! AdmissionReview v1 in and out: decode, call `plan`, ensure copies, encode.
