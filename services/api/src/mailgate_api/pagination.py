from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

Page = Annotated[int, Parameter(ge=0, default=0, description="Page number, from 0")]
PageSize = Annotated[
    int, Parameter(query="pageSize", ge=1, le=1000, default=20, description="Entries per page")
]


def pages(total: int, page_size: int) -> int:
    return max(1, -(-total // page_size))
