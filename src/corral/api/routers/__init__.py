"""One router per resource. Routes only translate HTTP to service calls and back."""
