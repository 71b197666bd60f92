"""A local stand-in for Microsoft Graph, Okta and Google's Directory API: one HTTP server on
127.0.0.1 that enforces each provider's documented request shapes and answers with its
documented error bodies."""
