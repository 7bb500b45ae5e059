"""The development OIDC issuer: FOR LOCAL DEVELOPMENT AND TESTS ONLY, never in production.

`spine up` and the tests run it (`spine-runtime dev-issuer --state-dir D --port P`) so the
proxy has an issuer to fetch keys from; `spine token` and tests sign tokens with `mint_token`.
Anyone who can read D/dev-issuer/ can mint any token it accepts.
"""

from spine_runtime.devissuer.keys import mint_token, rotate_key

__all__ = ["mint_token", "rotate_key"]
