"""The public JSON contract: job states and every shape the REST API sends and takes.

Defined once, here (pydantic): ``states`` (the one list of job states), ``jobs`` and
``service`` (the answers and requests), ``limits``; ``openapi.document()`` builds
``trainorch/api/openapi.json`` from them, and the panel's TypeScript types are generated
from that document. Submissions are validated by ``spec.JobSpec``, which it includes.
"""
