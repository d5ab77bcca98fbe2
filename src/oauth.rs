//! OAuth2 token requests: grants, client authentication, response parsing, error classes.
