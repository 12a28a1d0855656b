package main

import (
	"flag"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-gw/shoal/auth"
	"github.com/shoal-gw/shoal/service"
	"github.com/shoal-gw/shoal/service/chat"
)

// chatFlags registers the flags of `shoal service chat`.
func chatFlags(fs *flag.FlagSet) makeService {
	var (
		cfg      chat.Config
		replicas int
	)
	fs.IntVar(&cfg.History, "history", chat.DefaultHistory, "messages kept per room")
	fs.IntVar(&cfg.MaxText, "max-text", chat.DefaultMaxText, "longest message text in bytes (after trimming); longer: too_long")
	fs.Float64Var(&cfg.Rate, "rate", chat.DefaultRate, "messages per second one user may say, counted by each instance (-1: no limit)")
	fs.IntVar(&cfg.Burst, "burst", chat.DefaultBurst, "messages one user may say at once before --rate holds them back")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", chat.DefaultTokenTTL, "how long the token of a welcome is valid")
	fs.IntVar(&cfg.BcryptCost, "bcrypt-cost", bcrypt.DefaultCost, "cost of new password hashes, 4 to 31: each step doubles the work of register and login (benches with thousands of users lower it)")
	fs.StringVar(&cfg.Stream, "history-stream", "", "JetStream stream of the messages (default: <prefix>_chat_history)")
	fs.StringVar(&cfg.Accounts, "accounts-bucket", "", "key-value bucket of the accounts (default: <prefix>_chat_accounts)")
	fs.StringVar(&cfg.Rooms, "rooms-bucket", "", "key-value bucket of the rooms (default: <prefix>_chat_rooms)")
	fs.StringVar(&cfg.Presence, "presence-bucket", "", "key-value bucket of who is where (default: <prefix>_chat_presence)")
	fs.IntVar(&replicas, "replicas", 0, "copies of the stream and buckets when they are created (default: 1 on a single NATS server, 3 in a cluster)")
	return func(env serviceEnv) (service.Handler, error) {
		if env.TokenKeyFile == "" {
			return nil, usageError("service chat: --token-key-file is required: the key signs the tokens of welcome (serve passes its own)")
		}
		key, err := auth.LoadKey(env.TokenKeyFile)
		if err != nil {
			return nil, err
		}
		store, err := service.OpenStore(env.NATS, service.StoreConfig{Replicas: replicas, Logger: env.Logger})
		if err != nil {
			return nil, err
		}
		cfg.Store, cfg.Tokens, cfg.Logger = store, key, env.Logger
		return chat.New(cfg)
	}
}
