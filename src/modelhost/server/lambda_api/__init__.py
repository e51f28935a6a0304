"""The Lambda API (rest-json, botocore's ``lambda`` service model) on the server's one port."""

from modelhost.server.lambda_api.app import LambdaApi, is_lambda

__all__ = ["LambdaApi", "is_lambda"]
