"""What console pages show, gathered from the service packages' queries and views (the same
data the API returns) and arranged for templates. No rules live here: what may be done is
decided by the service functions, and who may see what by the permissions of the API routes.
"""
