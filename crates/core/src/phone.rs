//! Phone numbers: extension split and E.164 normalisation.
