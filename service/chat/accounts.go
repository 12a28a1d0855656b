package chat

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-gw/shoal/service"
)

// account is the value of user.<name> in the accounts bucket.
type account struct {
	Hash    string `json:"hash"` // bcrypt
	Created string `json:"created"`
}

// checkCredentials validates a register or login request.
func (h *Handler) checkCredentials(c *service.Conn, req *request) error {
	if !validName(req.User, MaxUser) {
		return failure(CodeBadRequest, "user: 1 to 32 of A-Z a-z 0-9 _ -")
	}
	if n := len(req.Password); n < MinPassword || n > MaxPassword {
		return failure(CodeBadRequest, "password: 8 to 72 bytes")
	}
	if u := c.User(); u != "" && u != req.User {
		return failure(CodeBadRequest, "this connection is already "+u)
	}
	if !h.auths.allow(c.ID(), time.Now()) {
		return failure(CodeRateLimited, "too many attempts, wait a second")
	}
	return nil
}

// register creates an account and logs the connection in.
func (h *Handler) register(ctx context.Context, c *service.Conn, req *request) error {
	if err := h.checkCredentials(c, req); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(req.Password), h.cfg.BcryptCost)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(account{Hash: string(hash), Created: time.Now().UTC().Format(time.RFC3339)})
	if _, err := h.accounts.Create(ctx, accountKey(req.User), b); errors.Is(err, service.ErrKeyExists) {
		return failure(CodeUserTaken, "user "+req.User+" exists")
	} else if err != nil {
		return err
	}
	return h.bind(c, req)
}

// login checks a password and logs the connection in.
func (h *Handler) login(ctx context.Context, c *service.Conn, req *request) error {
	if err := h.checkCredentials(c, req); err != nil {
		return err
	}
	e, err := h.accounts.Get(ctx, accountKey(req.User))
	var acc account
	switch {
	case errors.Is(err, service.ErrNotFound):
		acc.Hash = string(h.dummyHash)
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(e.Value, &acc); err != nil {
			return err
		}
	}
	if bcrypt.CompareHashAndPassword([]byte(acc.Hash), []byte(req.Password)) != nil || e.Key == "" {
		return failure(CodeBadCredentials, "unknown user or wrong password")
	}
	return h.bind(c, req)
}

// bind makes the connection req.User: the shard puts the user on its
// later events. The identify command and the welcome go to the shard on
// the same subject from the same connection, so the shard has bound the
// user before the client reads welcome and sends its next message.
func (h *Handler) bind(c *service.Conn, req *request) error {
	if err := c.Identify(req.User); err != nil {
		return err
	}
	h.welcome(c, req.ID, req.User)
	return nil
}

// welcome sends user a fresh token.
func (h *Handler) welcome(c *service.Conn, id json.RawMessage, user string) {
	token, exp, err := h.cfg.Tokens.Sign(user, h.audience, h.cfg.TokenTTL, time.Now())
	if err != nil {
		h.log.Error("chat: sign token", "user", user, "err", err)
		h.fail(c, &request{ID: id}, err)
		return
	}
	h.reply(c, welcomeReply{Type: TypeWelcome, ID: id, User: user, Token: token, Expires: exp.UTC().Format(time.RFC3339)})
}
