// Command devstack runs the whole chat system in one process (make run):
// websocket-server, ai-consumer and message-relay on an embedded broker and
// Redis, with the offline model unless OPENAI_API_KEY is set.
//
//	devstack                          run everything
//	devstack token -user alice        print an HS256 token for alice over AUTH_SECRET
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/devstack"
	"github.com/chatrelay/chat/internal/process"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		if err := mintToken(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "token:", err)
			os.Exit(2)
		}
		return
	}
	process.Main("devstack", func(ctx context.Context) error { return devstack.Run(ctx, os.Stderr) })
}

func mintToken(args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	user := fs.String("user", "demo", "user id (the token's sub)")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := os.Getenv("AUTH_SECRET")
	if secret == "" {
		return errors.New("AUTH_SECRET: must be set to mint a token the servers accept")
	}
	if !auth.ValidUserID(*user) {
		return errors.New("-user: 1-64 characters of [A-Za-z0-9._:-]")
	}
	tok, err := auth.Mint([]byte(secret), *user, *ttl)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
