"""swapmeet.protocol: wire objects, canonical encoding, signatures, validation rules and pure state machines. No I/O."""
