"""Inbound SCIM 2.0 (RFC 7643/7644): an HR system or identity provider pushes people and groups.

Users are identities and groups are identity groups; every identity write goes through
`grantflow.access.identities`, so a SCIM push emits the same lifecycle events as the REST API.
The HTTP side lives in `grantflow.api.routes.scim`; each module here has one job:

- `resources`: the SCIM models served, the policy that tolerates Entra's quirks, the service
  provider configuration.
- `mapping`: identity and group rows to SCIM resources and back.
- `entra`: normalising payloads from Microsoft Entra's provisioning client.
- `filters`: SCIM filters compiled to SQL (plus an exact re-check when SQL can only narrow).
- `search`: list and search requests, sorting and pagination.
- `patch`: reading and applying PATCH requests.
- `users`, `groups`: the operations on each resource type.
- `discovery`: ServiceProviderConfig, ResourceTypes and Schemas.
- `protocol`: request bodies, ETags and SCIM errors.
"""
