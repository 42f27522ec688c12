# Sourced by every script that starts Ray (scripts/serve.sh, cluster/local_cluster.sh,
# bench/): Ray's token authentication stays on, with one random token per user, made
# once, kept owner-only under ~/.cache/openai-serve/ and handed to every Ray process
# and client those scripts start (through the environment they inherit). Loopback
# binding is a courtesy on top: Ray opens some ports on every interface regardless,
# and the token is what refuses a peer there.
#
#   RAY_AUTH_TOKEN_PATH   a token file already in use (kept: e.g. the test suite's);
#                         else ${OPENAI_SERVE_CACHE:-~/.cache/openai-serve}/ray_auth_token
OPENAI_SERVE_RAY_TOKEN_FILE="${RAY_AUTH_TOKEN_PATH:-${OPENAI_SERVE_CACHE:-$HOME/.cache/openai-serve}/ray_auth_token}"
if [ ! -s "$OPENAI_SERVE_RAY_TOKEN_FILE" ]; then
    mkdir -p "$(dirname "$OPENAI_SERVE_RAY_TOKEN_FILE")"
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32), end="")' \
        > "$OPENAI_SERVE_RAY_TOKEN_FILE")
fi
chmod 600 "$OPENAI_SERVE_RAY_TOKEN_FILE"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$OPENAI_SERVE_RAY_TOKEN_FILE"
