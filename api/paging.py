"""How the API's lists page: ?limit= and ?offset=, answered as {"items": [...], "count": n}."""

from ninja import Field, Schema
from ninja.pagination import LimitOffsetPagination

PAGE_LIMIT = 200  # rows per page at most
LARGEST_ID = 2**63 - 1  # PostgreSQL's bigint: a larger number is refused (422), never a database error


class Paged(LimitOffsetPagination):
    """?limit= (default 100, more than PAGE_LIMIT gives PAGE_LIMIT) and ?offset=, within what PostgreSQL takes."""

    class Input(Schema):
        limit: int = Field(100, ge=1, description=f"Rows per page; more than {PAGE_LIMIT} gives {PAGE_LIMIT}.")
        offset: int = Field(0, ge=0, le=LARGEST_ID)
