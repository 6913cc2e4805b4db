from tests.ray_fixtures import serve_instance

__all__ = ["serve_instance"]
