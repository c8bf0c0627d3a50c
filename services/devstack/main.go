// Command devstack runs the whole chat system in one process (make run):
// websocket-server, ai-consumer and message-relay on an embedded broker and
// Redis, with the offline model unless OPENAI_API_KEY is set.
//
//	devstack                          run everything
//	devstack token -user alice        print an HS256 token for alice over AUTH_SECRET
//	devstack chat -url ws://localhost:8080/ws -user alice   terminal chat client
//	devstack dlq-replay -topic incoming_messages.dlq
//	                                  send dead-lettered records back to their topic
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/chatcli"
	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/devstack"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/process"
)

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "token":
			err = mintToken(os.Args[2:])
		case "dlq-replay":
			err = replayDLQ(os.Args[2:])
		case "chat":
			err = chat(os.Args[2:])
		default:
			goto run
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
			os.Exit(2)
		}
		return
	}
run:
	process.Main("devstack", func(ctx context.Context) error { return devstack.Run(ctx, os.Stderr) })
}

// chat is the terminal client: lines in, answers out, reconnecting with
// resume.
func chat(args []string) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	u := fs.String("url", "ws://localhost:8080/ws", "chat WebSocket URL")
	user := fs.String("user", "demo", "user id")
	tok := fs.String("token", os.Getenv("CHAT_TOKEN"), "token (default: minted from AUTH_SECRET)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ac auth.Config
	if err := config.Load(&ac); err != nil {
		return err
	}
	if *tok == "" && ac.Secret == "" {
		return errors.New("give -token (or CHAT_TOKEN), or set AUTH_SECRET to mint one")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return chatcli.Run(ctx, os.Stdin, os.Stdout, chatcli.Options{URL: *u, UserID: *user, Token: *tok,
		Mint: func(id string) (string, error) { return auth.MintFromConfig(ac, id, 24*time.Hour) }})
}

func replayDLQ(args []string) error {
	fs := flag.NewFlagSet("dlq-replay", flag.ContinueOnError)
	topic := fs.String("topic", "", "dead-letter topic to replay (incoming_messages.dlq or responses.dlq)")
	group := fs.String("group", "dlq-replay", "consumer group that remembers what was replayed")
	dry := fs.Bool("dry-run", false, "list what would be replayed, send nothing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	brokers, err := kafka.ParseBrokers(os.Getenv("KAFKA_BOOTSTRAP_SERVERS"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := kafka.ReplayDLQ(ctx, brokers, *topic, *group, *dry, func(r *kgo.Record, target string) {
		fmt.Printf("%s/%d@%d -> %s  reason: %s\n", r.Topic, r.Partition, r.Offset, target, kafka.Header(r, kafka.HeaderDLQReason))
	})
	fmt.Printf("%d record(s) %s\n", n, map[bool]string{true: "would be replayed", false: "replayed"}[*dry])
	return err
}

func mintToken(args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	user := fs.String("user", "demo", "user id (the token's sub)")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ac auth.Config
	if err := config.Load(&ac); err != nil {
		return err
	}
	if ac.Secret == "" {
		return errors.New("AUTH_SECRET: must be set to mint a token the servers accept")
	}
	if !auth.ValidUserID(*user) {
		return errors.New("-user: 1-64 characters of [A-Za-z0-9._:-]")
	}
	tok, err := auth.MintFromConfig(ac, *user, *ttl)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
