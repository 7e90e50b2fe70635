"""AWS: ftm's settings in; the CloudFormation stack (`stack.py`), the container image (`image.py`)
and the code package the batch backend ships to containers (`code_package.py`) out, all through
the boto3 clients of `clients.py`. Start with `stack.py`. Used module by module (`stack.deploy`)."""

from ftm.aws import clients, code_package, image, stack

__all__ = ["clients", "code_package", "image", "stack"]
